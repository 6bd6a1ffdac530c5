"""Put the resolved run config where people look for it: the log dir *and* every logger (W&B).

LightningCLI already writes ``config.yaml`` to the log dir; a W&B dashboard shows nothing of it
unless the config is also sent as hyper-parameters. Rank 0 only (Lightning calls ``save_config``
there), so DDP runs log it once.
"""

from __future__ import annotations

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback


class SaveAndLogConfig(SaveConfigCallback):
    """``SaveConfigCallback`` that also logs the flattened resolved config to each attached logger."""

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        resolved = self.config.as_dict() if hasattr(self.config, "as_dict") else dict(self.config)
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": resolved})
