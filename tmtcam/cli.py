"""Command line: LightningCLI (``fit/validate/test/predict``) plus ``demo``, ``bench`` and ``explain``.

``python -m tmtcam fit --config experiments/...yaml`` is plain LightningCLI in subclass mode: the
model and data module are chosen by ``class_path`` in the YAML, so any LightningModule / DataModule
works and nothing here needs to know which tasks exist. The extra sub-commands are small programs
with their own ``main(argv)``, imported only when asked for (so ``--help`` stays fast and a missing
optional piece cannot break training).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from tmtcam.environment import apply_offline_defaults, traceback_requested

# sub-command -> {target: "module:function"}; the function takes the remaining argv and returns an exit code
EXTRA_COMMANDS: dict[str, dict[str, str]] = {
    "demo": {
        "tmt": "tmtcam.pipelines.tmt_demo:main",
        "promptcam": "tmtcam.pipelines.promptcam_demo:main",
    },
    "bench": {
        "tmt": "tmtcam.pipelines.tmt_benchmark:main",
        "speed": "tmtcam.bench.speed:main",
        "gpu": "tmtcam.bench.gpu_speed:main",
        "all": "tmtcam.bench.run_all:main",
    },
    "explain": {"": "tmtcam.promptcam.explain:main"},
}


EXTRA_HELP = """tmtcam: LightningCLI sub-commands below, plus
  tmtcam demo {tmt,promptcam} --out DIR      embedded synthetic end-to-end runs (make train-tmt / train-promptcam)
  tmtcam bench {tmt,speed,gpu,all} [options]  accuracy / speed benchmarks -> docs/benchmarks.md
  tmtcam explain --ckpt CKPT --images DIR --out DIR   Prompt-CAM trait heatmaps for a folder of images
"""


def _dispatch(command: str, argv: list[str]) -> int:
    targets = EXTRA_COMMANDS[command]
    if "" in targets:
        target = targets[""]
    elif argv and argv[0] in targets:
        target, argv = targets[argv[0]], argv[1:]
    else:
        choices = ", ".join(targets)
        asked_for_help = argv[:1] in (["-h"], ["--help"])
        print(
            f"usage: tmtcam {command} {{{choices}}} [options]",
            file=sys.stdout if asked_for_help else sys.stderr,
        )
        return 0 if asked_for_help else 2
    module_name, function = target.split(":")
    return int(getattr(importlib.import_module(module_name), function)(argv) or 0)


def run_lightning_cli(argv: Sequence[str] | None) -> None:
    """LightningCLI in subclass mode.

    Every run keeps its last checkpoint (``--ckpt_path last`` resumes), stops cleanly on a NaN loss,
    checks its run dir before training and never overwrites an earlier run's checkpoints; ``predict``
    writes its outputs to files.
    """
    from lightning.pytorch import LightningDataModule, LightningModule

    from tmtcam.training.checked_cli import CheckedLightningCLI, ShortUsageParser
    from tmtcam.training.config_logging import SaveAndLogConfig
    from tmtcam.training.guards import LastCheckpoint, NonFiniteLossGuard, RunDirGuard

    callbacks = [
        LastCheckpoint(),
        NonFiniteLossGuard(),
        RunDirGuard(refuse_existing_checkpoints=True),
    ]  # + the PredictionFileWriter, configurable as --prediction_writer.* (CheckedLightningCLI)
    CheckedLightningCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_defaults={"callbacks": callbacks},
        save_config_callback=SaveAndLogConfig,
        parser_class=ShortUsageParser,
        parser_kwargs={"prog": "tmtcam"},
        save_config_kwargs={"overwrite": True},
        args=None if argv is None else list(argv),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code.

    Errors that are about the user's input (config, weights file, checkpoint, run dir, a NaN loss)
    are printed as one message, without a traceback: the message names the file or key to fix.
    Exit codes: 2 for a configuration that cannot run (as for a mistyped option), 1 for a run that
    stopped. Under DDP, a process that stops because *another* one did says so in one line (the other
    process printed the cause). ``TMTCAM_TRACEBACK=1`` raises such an error with its traceback instead.
    """
    apply_offline_defaults()
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in EXTRA_COMMANDS:
        return _dispatch(args[0], args[1:])
    if args[:1] in (["-h"], ["--help"]):
        print(EXTRA_HELP)
    from tmtcam.training.checked_cli import USER_FACING_ERRORS
    from tmtcam.training.preflight import ConfigError, DataError

    try:
        run_lightning_cli(argv)
    except USER_FACING_ERRORS as error:
        if traceback_requested():
            raise
        kinds = ((DataError, "invalid data"), (ConfigError, "invalid configuration"))
        kind = next((text for cls, text in kinds if isinstance(error, cls)), type(error).__name__)
        print(f"tmtcam: error: {kind}: {user_message(error)}", file=sys.stderr)
        return 2 if isinstance(error, ConfigError) else 1
    except Exception as error:
        if not lost_a_peer(error) or traceback_requested():
            raise
        print(f"tmtcam: error: {PEER_STOPPED}", file=sys.stderr)
        return 1
    return 0


# DDP: when one process stops (a corrupt image, a bad label), the others fail in their next collective
# with the backend's error, a long traceback printed after, and burying, the one line that names the cause
PEER_LOST_PHRASES = (
    "Connection closed by peer", "Connection reset by peer", "remote worker crashing", "remote process exited",
)  # fmt: skip
PEER_STOPPED = (
    "another DDP process stopped, so this one stopped too; that process's error above names the cause"
)


def lost_a_peer(error: BaseException) -> bool:
    """Whether ``error`` is a DDP process losing a peer (gloo's "Connection closed / reset by peer",
    NCCL's "remote process exited"), not a failure of its own: other distributed errors (a store or
    a timeout) keep their traceback."""
    import torch.distributed

    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return False  # no DDP here: a "connection reset" is this process's own failure
    return isinstance(error, RuntimeError) and any(phrase in str(error) for phrase in PEER_LOST_PHRASES)


def user_message(error: BaseException) -> str:
    """The error's own message, also when a DataLoader worker raised it.

    PyTorch re-raises a worker's exception as the same type whose message is "Caught X in
    DataLoader worker process N." plus the worker's whole traceback; its last line holds the
    original ``module.X: message``, which is what names the file.
    """
    text = str(error)
    if "Original Traceback" not in text:
        return text
    last = text.strip().splitlines()[-1]
    qualified, _, message = last.partition(": ")
    return message if qualified.endswith(type(error).__name__) and message else last
