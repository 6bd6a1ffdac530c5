"""A file the demos and benchmarks train once and reuse, keyed by the settings it was made with.

A cached source model or pre-trained backbone is only worth reusing if it was made with today's
settings: a run with another step count must not report on a model trained on a different budget.
The settings are written as JSON beside the file, after it; and the old record is removed before
the file is remade, so a run killed in between leaves no record that vouches for a half-replaced
file (it did for the Prompt-CAM backbone: a killed retrain kept the old record beside new weights).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class SettingsCache:
    """``path`` and its record ``<path>.json`` holding ``settings`` (JSON-serialisable)."""

    path: Path
    settings: dict[str, Any]

    @property
    def record(self) -> Path:
        return self.path.with_suffix(".json")

    def is_current(self) -> bool:
        """The file exists and was made with exactly these settings."""
        return (
            self.path.is_file()
            and self.record.is_file()
            and json.loads(self.record.read_text()) == self.settings
        )

    def begin_remake(self) -> None:
        """Call before writing ``path``: the old record no longer describes what will be there."""
        self.record.unlink(missing_ok=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def finish_remake(self) -> None:
        """Call once ``path`` is written: record the settings it was made with."""
        self.record.write_text(json.dumps(self.settings))
