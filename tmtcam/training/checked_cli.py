"""LightningCLI that checks the whole configuration before building the trainer or writing anything.

jsonargparse already rejects unknown keys and wrong types by name. What it cannot know is that a
value it accepted is unusable: a backbone name timm does not have, a weights file that is not there,
a crop the patches do not tile, more GPUs than the machine has. Those are raised by the constructors
(or by :mod:`tmtcam.training.preflight`) with messages that name the key; jsonargparse then buries
them in a "Does not validate against any of the Union subtypes" dump. Here they come out alone, as
a :class:`~tmtcam.training.preflight.ConfigError`.

It also settles what a run dir and a checkpoint mean before anything is built: loggers write into
``trainer.default_root_dir``; ``--ckpt_path last`` is that dir's newest ``last.ckpt``; a checkpoint's
saved file paths give way to files that exist now; and a checkpoint of a W&B-logged run continues
that W&B run.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import IO, NoReturn

from jsonargparse import Namespace
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_warn

from data_modules.segmentation import SegmentationDataError
from data_modules.species import SpeciesDataError
from tmtcam.backbones.loading import WeightsError
from tmtcam.training.checkpoint_compat import (
    CheckpointMismatch,
    check_checkpoint_file,
    mapped_checkpoint,
    newest_last_checkpoint,
)
from tmtcam.training.guards import TrainingFault
from tmtcam.training.prediction_writer import PredictionFileWriter
from tmtcam.training.preflight import (
    ConfigError,
    check_data,
    check_devices,
    check_epoch_schedule,
    check_input_geometry,
    check_schedule_length,
    fill_normalization,
)
from tmtcam.training.progress_bar import output_is_terminal

# raised on purpose, with a message meant for the user (the CLI prints them without a traceback);
# the data errors name the file, also when one is met mid-run (a corrupt image at step 5000)
USER_FACING_ERRORS = (
    ConfigError, TrainingFault, CheckpointMismatch, WeightsError, SegmentationDataError, SpeciesDataError,
)  # fmt: skip
LIGHTNING_CKPT_NAMES = ("last", "best", "hpc")  # --ckpt_path words Lightning resolves itself
# what constructors raise for a bad argument value (FileNotFoundError: e.g. a missing init checkpoint)
CONSTRUCTOR_ERRORS = (ValueError, WeightsError, CheckpointMismatch, FileNotFoundError)


class ShortUsageParser(LightningArgumentParser):
    """A parser error prints one usage line above the message that names the key, instead of every
    option of the sub-command (a LightningCLI lists hundreds); ``--help`` still shows them all.

    jsonargparse's message for a bad nested value (``target_test`` without ``dataset``) ends each
    level with a ``Given value:`` dump of the whole parsed section, thousands of characters on one
    line that bury the key and the reason; those dumps are cut short.
    """

    def print_usage(self, file: IO[str] | None = None) -> None:
        (file or sys.stdout).write(f"usage: {self.prog} [--config CONFIG] [options]  (--help lists them)\n")

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        super().error(without_value_dumps(message), ex)


def without_value_dumps(message: str, longest: int = 160) -> str:
    """``message`` with each ``Given value: ...`` line longer than ``longest`` characters cut there."""
    lines = []
    for line in message.splitlines():
        if line.lstrip().startswith("Given value:") and len(line) > longest:
            line = line[:longest] + " ... (cut; --print_config shows the whole config)"
        lines.append(line)
    return "\n".join(lines)


class CheckedLightningCLI(LightningCLI):
    """``LightningCLI`` plus checkpoint, fresh-run-dir, device, LR-schedule-length, input-geometry,
    data-folder and constructor-error checks (module doc), all before the trainer writes anything."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """``predict`` writes files through a :class:`PredictionFileWriter`, set as ``prediction_writer``."""
        parser.add_lightning_class_args(PredictionFileWriter, "prediction_writer")

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Check ``--ckpt_path`` against the model *as configured*, before its hyper-parameters replace it."""
        super().parse_arguments(parser, args)
        config = self.config.get(self.config.get("subcommand") or "", self.config)
        if config.get("ckpt_path") == "last":
            config.ckpt_path = resolve_last_checkpoint(config.trainer.default_root_dir)
        ckpt_path = config.get("ckpt_path")
        model = config.get("model") or {}
        init_args = model.get("init_args") or {}
        # the weights file as this run gives it: LightningCLI replaces it by the checkpoint's next
        self._given_weights = (init_args.get("backbone") or {}).get("weights")
        self._given_model = flat_settings(init_args)
        if ckpt_path and not lightning_resolves(str(ckpt_path)):
            check_ckpt_path_is_file(ckpt_path)
            check_checkpoint_file(ckpt_path, model.get("class_path"), init_args.get("num_classes"))

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        check_devices(config.trainer.accelerator, config.trainer.devices)
        model_args = (config.get("model") or {}).get("init_args") or {}
        if config.get("ckpt_path"):
            warn_replaced_settings(
                self._given_model, flat_settings(model_args), config.ckpt_path, self.subcommand
            )
            use_current_file_paths(model_args, config.ckpt_path, self._given_weights)
        check_schedule_length(model_args.get("max_epochs"), config.trainer.get("max_epochs"))
        data_args = (config.get("data") or {}).get("init_args")
        if data_args is not None and model_args.get("backbone"):
            fill_normalization(data_args, model_args["backbone"])
        root = config.trainer.get("default_root_dir")
        if root and Path(root).exists() and not Path(root).is_dir():
            raise ConfigError(f"trainer.default_root_dir={root} is a file, not a folder")
        if self.subcommand == "fit":
            check_fresh_run_dir(root, config.get("ckpt_path"))
        if self.subcommand == "predict" and config.get("return_predictions") is None:
            config.return_predictions = False  # written to files per batch (PredictionFileWriter)
        if root:
            place_loggers_in_run_dir(config.trainer)
        use_rich_progress_bar(config.trainer)
        if config.get("ckpt_path"):  # resuming, or evaluating a run: its metrics join that run
            continue_wandb_run(config.trainer, config.ckpt_path)

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ConfigError:
            raise
        except CONSTRUCTOR_ERRORS as error:
            cause = innermost_cause(error)
            kind = "" if type(cause) in (ValueError, ConfigError) else f"{type(cause).__name__}: "
            raise ConfigError(f"{kind}{cause}") from error
        check_input_geometry(self.model, self.datamodule)
        if self.subcommand == "fit":  # before check_data, which may index a large dataset
            check_epoch_schedule(self.model, self.trainer.max_epochs)
        check_data(self.model, self.datamodule, self.subcommand)


def lightning_resolves(ckpt_path: str) -> bool:
    """``--ckpt_path`` values Lightning resolves itself: ``last`` (no run dir), ``best``, ``hpc``, a
    model-registry name, or a remote URL (``s3://``, ``https://``: loaded through fsspec)."""
    return ckpt_path in LIGHTNING_CKPT_NAMES or ckpt_path.startswith("registry") or "://" in ckpt_path


def check_ckpt_path_is_file(ckpt_path: str) -> None:
    """A ``--ckpt_path`` that is no file is refused here, before the run dir is written (Lightning
    would first write ``config.yaml`` and ``hparams.yaml``, then stop with a traceback)."""
    path = Path(ckpt_path)
    if path.is_dir():
        raise ConfigError(
            f"--ckpt_path {ckpt_path} is a folder; give a .ckpt file in it, or resume the run kept there "
            f"with --ckpt_path last --trainer.default_root_dir {ckpt_path}"
        )
    if not path.is_file():
        raise ConfigError(f"--ckpt_path {ckpt_path}: no such checkpoint file")


def flat_settings(settings: Namespace | dict | None, prefix: str = "") -> dict[str, object]:
    """``{"acte.alpha": 0.5, ...}``: nested model arguments as dotted keys, to compare two configs."""
    items = settings.as_dict() if isinstance(settings, Namespace) else dict(settings or {})
    flat: dict[str, object] = {}
    for key, value in items.items():
        if isinstance(value, Namespace | dict):
            flat.update(flat_settings(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


FILE_SETTINGS = ("backbone.weights", "backbone.pretrained", "init_checkpoint")  # use_current_file_paths


def warn_replaced_settings(
    given: dict[str, object], used: dict[str, object], ckpt_path: str, subcommand: str | None
) -> None:
    """Say which model settings of this run the checkpoint's replaced.

    LightningCLI rebuilds the model exactly as the checkpoint was trained (its weights need that
    shape), copying the saved arguments over the config's: a ``--model.init_args.lr`` given with
    ``--ckpt_path`` was silently not used. File paths are handled by :func:`use_current_file_paths`.
    """
    changed = [
        f"{key}: {given.get(key)!r} -> {used.get(key)!r}"
        for key in sorted(set(given) | set(used))
        if key not in FILE_SETTINGS and given.get(key) is not None and given.get(key) != used.get(key)
    ]  # None: not set, left to the data (num_classes, class_names), so nothing of the user's is lost
    if not changed:
        return
    advice = (
        " To train with other settings, start a new run from its weights (TMT: model.init_args.init_checkpoint)"
        if subcommand == "fit"
        else ""
    )
    rank_zero_warn(
        f"--ckpt_path {ckpt_path}: the model is rebuilt as that checkpoint was trained, so these "
        f"model.init_args of this run were replaced by the checkpoint's: {'; '.join(changed)}.{advice}"
    )


def use_current_file_paths(model_args: Namespace, ckpt_path: str, given_weights: str | None) -> None:
    """Undo, for file paths, LightningCLI copying a checkpoint's model arguments over this run's.

    The copy keeps the model the checkpoint was trained as; but the paths it saved are where files
    *were*, and a checkpoint moved to another machine (or tested from another folder) could then
    not be loaded at all:

    * ``init_checkpoint`` only seeds a fresh run; the checkpoint holds every weight, so it is dropped;
    * ``backbone.weights``: a file this run gives that exists wins (a Prompt-CAM checkpoint checks it
      is the same file by its SHA-256); otherwise, if the saved one is gone, a checkpoint that holds
      the backbone itself (TMT's always do) builds it without the file.
    """
    if model_args.get("init_checkpoint"):
        model_args.init_checkpoint = None
    backbone = model_args.get("backbone")
    if not backbone:
        return
    if given_weights not in (None, "???") and Path(given_weights).is_file():
        backbone["weights"] = given_weights
    elif backbone.get("weights") and not Path(backbone["weights"]).is_file() and holds_backbone(ckpt_path):
        backbone["weights"], backbone["pretrained"] = None, False


def holds_backbone(ckpt_path: str) -> bool:
    """Whether the checkpoint's state dict includes backbone (ViT) weights."""
    state = mapped_checkpoint(ckpt_path).get("state_dict", {})
    return any(".backbone.vit." in f".{name}" for name in state)


def resolve_last_checkpoint(root: str | None) -> str:
    """``--ckpt_path last`` -> the newest ``last*.ckpt`` under the run dir ``root``.

    Lightning looks for "last" only in the checkpoint folder of the *new* run, which is a new one
    whenever the first logger versions its folders (W&B: one per run id, CSV: ``version_N``); it
    then warns and trains from scratch. Searching the whole run dir finds the run to resume, and
    an empty search is an error, not a silent restart. Without ``trainer.default_root_dir`` (the
    working directory) Lightning's own lookup is kept.
    """
    if not root:
        return "last"
    found = newest_last_checkpoint(root)
    if found is None:
        raise ConfigError(
            f"--ckpt_path last: no last.ckpt under trainer.default_root_dir={root}; give the checkpoint's "
            f"path, or leave out --ckpt_path to start a new run"
        )
    return str(found)


def check_fresh_run_dir(root: str | None, ckpt_path: str | None) -> None:
    """Refuse a new ``fit`` (no ``--ckpt_path``) in a run dir that already holds a run's ``last*.ckpt``.

    Loggers that name their folders per run (W&B: the run id) would give the new run a folder of its
    own, so nothing would be overwritten, but ``--ckpt_path last`` resumes the newest run under the
    run dir, which would then be the new one, perhaps started by mistake: one run dir holds one run.
    Checked before the loggers create anything, so a refused run leaves no trace. Lightning's own
    ``hpc_ckpt_*.ckpt`` in the run dir (a SLURM requeue, restored without ``--ckpt_path``) counts as
    resuming. Without ``trainer.default_root_dir`` (the working directory) nothing is searched; the
    run's own checkpoint folder is still checked by :class:`~tmtcam.training.guards.RunDirGuard`.
    """
    if not root or ckpt_path:
        return
    found = newest_last_checkpoint(root)
    if found is None or any(Path(root).glob("hpc_ckpt_*.ckpt")):
        return
    raise ConfigError(
        f"trainer.default_root_dir={root} already holds an earlier run ({found}); a new run there would "
        f"make --ckpt_path last ambiguous. Resume that run with --ckpt_path last, or start the new one in "
        f"another folder with --trainer.default_root_dir"
    )


def place_loggers_in_run_dir(trainer: Namespace) -> None:
    """Move every logger's ``save_dir`` to ``trainer.default_root_dir``: the run dir holds the run.

    Lightning puts checkpoints in the first logger's folder, so a logger's own ``save_dir`` would pin
    logs *and* checkpoints elsewhere whatever ``default_root_dir`` says (on the command line, or in
    a second YAML): every SLURM job of one config shared one folder, and ``--ckpt_path last`` and
    the fresh-run check (which search the run dir) found nothing.
    """
    loggers = trainer.get("logger")
    if not loggers or isinstance(loggers, bool):
        return
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        init_args = logger.get("init_args") if isinstance(logger, Namespace) else None
        if init_args is not None and "save_dir" in init_args:
            init_args.save_dir = trainer.default_root_dir


def use_rich_progress_bar(trainer: Namespace) -> None:
    """A Rich progress bar (:class:`~tmtcam.training.progress_bar.RunProgressBar`) in a terminal, unless
    the run turns bars off or configures a progress bar of its own; it goes into the saved config like
    any callback. Output to a file keeps Lightning's default bar (Rich would print once, at the end)."""
    if trainer.get("enable_progress_bar") is False or not output_is_terminal():
        return
    callbacks = trainer.get("callbacks") or []
    callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
    if any("ProgressBar" in str(getattr(callback, "class_path", "")) for callback in callbacks):
        return
    rich_bar = Namespace(class_path="tmtcam.training.progress_bar.RunProgressBar", init_args=Namespace())
    trainer.callbacks = [*callbacks, rich_bar]


def continue_wandb_run(trainer: Namespace, ckpt_path: str) -> None:
    """A run resumed (or validated / tested) from a checkpoint of a W&B-logged run continues that
    W&B run, in its checkpoint folder.

    Lightning keeps checkpoints in ``<save_dir>/<project>/<run id>/checkpoints``. A resumed run under
    a new id would write to a new folder: ``ModelCheckpoint`` then forgets the best score so far
    ("dirpath has changed") and W&B shows two runs. The id is read back from the checkpoint's path
    (``resume: allow``); a configured ``id`` or ``WANDB_RUN_ID`` (the SLURM script's) wins. A CSV
    logger's version is not reused: Lightning would delete its ``metrics.csv``.
    """
    loggers = trainer.get("logger")
    first = (loggers[0] if loggers else None) if isinstance(loggers, list) else loggers
    if not isinstance(first, Namespace) or not str(first.get("class_path", "")).endswith("WandbLogger"):
        return
    init_args = first.get("init_args") or Namespace()
    if init_args.get("id") or os.environ.get("WANDB_RUN_ID"):
        return
    checkpoint = Path(ckpt_path)
    run_folder = checkpoint.parent.parent
    project = init_args.get("project") or os.environ.get("WANDB_PROJECT") or "lightning_logs"  # as Lightning
    if checkpoint.parent.name != "checkpoints" or run_folder.parent.name != project:
        return  # not a checkpoint this logger wrote (an hpc_ckpt, a copied file)
    init_args.id = run_folder.name
    init_args.resume = init_args.get("resume") or "allow"
    first.init_args = init_args


def innermost_cause(error: BaseException) -> BaseException:
    """The error a constructor raised, without the wrappers jsonargparse put around it."""
    while error.__cause__ is not None and _raised_in_jsonargparse(error):
        error = error.__cause__
    return error


def _raised_in_jsonargparse(error: BaseException) -> bool:
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and "jsonargparse" in frames[-1].filename
