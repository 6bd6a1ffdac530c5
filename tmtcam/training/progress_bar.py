"""The CLI's progress bar in a terminal: Lightning's ``RichProgressBar``, labelled for step-based runs.

Rich shows the logged metrics beside the bar. It draws only in a terminal: written to a file (a
SLURM log) it would print the bar once, when training ends, so runs whose output is not a terminal
keep Lightning's default bar. Lightning labels its bar ``Epoch e/max_epochs - 1``; a run bounded by
``max_steps`` (every TMT config) has ``max_epochs = -1`` and would read ``Epoch 0/-2``, so such
runs show the epoch alone.
"""

from __future__ import annotations

import sys

from lightning.pytorch.callbacks import RichProgressBar


def output_is_terminal() -> bool:
    """Whether this process writes to a terminal (not a file, a pipe or a SLURM log)."""
    return sys.stdout.isatty()


class RunProgressBar(RichProgressBar):
    """``RichProgressBar`` that names no epoch bound when the run has none (module doc)."""

    def _get_train_description(self, current_epoch: int) -> str:
        max_epochs = self.trainer.max_epochs
        if max_epochs is not None and max_epochs >= 0:
            return super()._get_train_description(current_epoch)
        return f"{f'Epoch {current_epoch}':{len(self.validation_description)}}"
