"""Put the resolved run config where people look for it: the log dir *and* every logger (W&B).

LightningCLI already writes ``config.yaml`` to the log dir; a W&B dashboard shows nothing of it
unless the config is also sent as hyper-parameters. Rank 0 only (Lightning calls ``save_config``
there), so DDP runs log it once.

The CLI lets a run overwrite ``config.yaml`` (a resumed run must be able to start in its own log
dir), but when the log dir is shared by runs (no logger, or W&B first, whose log dir is its
``save_dir``) that would throw away the config of the earlier run, perhaps because the new one
failed at once. A differing earlier config is therefore moved aside, never overwritten; and
``validate`` / ``test`` / ``predict`` write ``config-<stage>.yaml``, so the config beside a
run's checkpoints stays the one it was trained with.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback


class SaveAndLogConfig(SaveConfigCallback):
    """``SaveConfigCallback`` that keeps earlier configs and logs the resolved one to each logger."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fit_config_filename = self.config_filename

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        name = getattr(stage, "value", stage)  # Lightning passes a TrainerFn (a str enum)
        # validate/test/predict in a run dir keep the training run's config.yaml
        self.config_filename = stage_config_name(self._fit_config_filename, name)
        if self.save_to_log_dir and not self.already_saved:
            log_dir = trainer.log_dir  # a broadcast: every rank must ask
            if trainer.is_global_zero and log_dir:
                keep_earlier_config(
                    Path(log_dir) / self.config_filename, self.parser.dump(self.config, skip_none=False)
                )
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        resolved = self.config.as_dict() if hasattr(self.config, "as_dict") else dict(self.config)
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": resolved})


def stage_config_name(fit_name: str, stage: str) -> str:
    """The file a stage's config is written to: ``fit`` uses the CLI's name (``config.yaml``), the
    other stages ``<stem>-<stage>.yaml`` (the prediction writer reads the name off the callback)."""
    return fit_name if stage == "fit" else f"{Path(fit_name).stem}-{stage}.yaml"


def keep_earlier_config(path: Path, new_text: str) -> Path | None:
    """Rename ``path`` to ``<stem>-<its mtime>.yaml`` if it holds another config; returns the new name."""
    if not path.is_file() or path.read_text() == new_text:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(path.stat().st_mtime))
    target = path.with_name(f"{path.stem}-{stamp}{path.suffix}")
    counter = 1
    while target.exists():
        target = path.with_name(f"{path.stem}-{stamp}-{counter}{path.suffix}")
        counter += 1
    path.rename(target)
    return target
