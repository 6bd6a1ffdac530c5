"""A BoringModel that takes a little time per step, so a test can kill its process mid-epoch."""

import time

from lightning.pytorch.demos.boring_classes import BoringModel


class SlowBoringModel(BoringModel):
    def training_step(self, batch, batch_idx):
        time.sleep(0.05)
        return super().training_step(batch, batch_idx)
