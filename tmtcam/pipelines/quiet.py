"""Keep the embedded demos' console readable: a table at the end, not pages of Lightning notices.

Only notices that say nothing about the user's run are silenced (device summary, tips, the
"no val_dataloader" note for source pre-training, a third-party deprecation); real warnings stay.
"""

from __future__ import annotations

import logging
import warnings

NOISE = (
    r".*`isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r".*You defined a `validation_step` but have no `val_dataloader`.*",
    r".*does not have many workers which may be a bottleneck.*",
    r".*The number of training batches \(\d+\) is smaller than the logging interval.*",
)


def quiet_lightning() -> None:
    """Lower Lightning's info logging to warnings and ignore the notices listed in :data:`NOISE`."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in NOISE:
        warnings.filterwarnings("ignore", message=pattern)
