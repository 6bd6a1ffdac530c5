"""The CLI's progress bar: Lightning's ``RichProgressBar``, labelled correctly for step-based runs.

Rich keeps finished epochs as one line each and shows the logged metrics beside the bar, which reads
well both in a terminal and in a SLURM log. Lightning labels its bar ``Epoch e/max_epochs - 1``;
a run bounded by ``max_steps`` (every TMT config) has ``max_epochs = -1`` and would read
``Epoch 0/-2``, so such runs show the epoch alone.
"""

from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar


class RunProgressBar(RichProgressBar):
    """``RichProgressBar`` that names no epoch bound when the run has none (module doc)."""

    def _get_train_description(self, current_epoch: int) -> str:
        max_epochs = self.trainer.max_epochs
        if max_epochs is not None and max_epochs >= 0:
            return super()._get_train_description(current_epoch)
        return f"{f'Epoch {current_epoch}':{len(self.validation_description)}}"
