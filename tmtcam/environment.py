"""Offline-safe process defaults, applied by the entry points (never at import).

albumentations checks PyPI for updates at import and W&B asks for a login on first use; on a
cluster node or a laptop on a plane both would hang or fail. The entry points call
:func:`apply_offline_defaults` first; an explicit user setting always wins.

``OMP_WAIT_POLICY=PASSIVE``: faiss-cpu ships its own OpenMP runtime beside torch's, so after a
faiss call two thread pools spin-wait for work on the same cores. Measured on 2 busy cores, one
eval forward of the small TMT segmenter took 2.46 s with spinning threads and 0.10 s with passive
ones. It must be set before torch or faiss is loaded, which is why the entry points set it first.
"""

from __future__ import annotations

import os
from pathlib import Path


def wandb_key_configured() -> bool:
    """True when the user gave W&B credentials (env var or ~/.netrc entry)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path.home() / ".netrc"
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def apply_offline_defaults() -> None:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not wandb_key_configured():
        os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
