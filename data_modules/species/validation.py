"""Checks shared by the species readers; every error names the file (and line or id) at fault.

A wrong root, a truncated annotation file or ids that do not line up otherwise surface as a
``KeyError`` deep inside training; here they fail at setup with the place to look.
"""

from __future__ import annotations

import csv
import importlib.util
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from data_modules.files import require_file, utf8_text

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


class SpeciesDataError(ValueError):
    """Annotation files or folders that are inconsistent or malformed."""


def first_existing(candidates: Iterable[Path]) -> Path | None:
    return next((path for path in candidates if path.exists()), None)


def read_rows(path: Path, num_fields: int, delimiter: str | None = None) -> list[tuple[int, list[str]]]:
    """Non-blank lines of a whitespace- (default) or ``delimiter``-separated table as (line number, fields).

    A line with fewer than ``num_fields`` fields is an error; extra fields are joined into the last
    one (class names with spaces).
    """
    rows = []
    with (
        require_file(path, "annotation file").open(newline="", encoding="utf-8") as handle,
        utf8_text(path, SpeciesDataError),
    ):
        lines = csv.reader(handle, delimiter=delimiter) if delimiter else (line.split() for line in handle)
        for number, fields in enumerate(lines, start=1):
            fields = [field.strip() for field in fields]
            if not any(fields):
                continue
            if len(fields) < num_fields:
                raise SpeciesDataError(
                    f"{path}:{number}: expected {num_fields} fields, got {len(fields)}: {fields}"
                )
            rows.append((number, fields[: num_fields - 1] + [" ".join(fields[num_fields - 1 :])]))
    return rows


def parse_int(value: str, path: Path, line: int) -> int:
    try:
        return int(value)
    except ValueError:
        raise SpeciesDataError(f"{path}:{line}: expected an integer, got {value!r}") from None


def parse_float(value: str, path: Path, line: int) -> float:
    """A finite float (``nan`` / ``inf`` would pass ``float()`` and poison boxes and part maps)."""
    try:
        number = float(value)
    except ValueError:
        raise SpeciesDataError(f"{path}:{line}: expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise SpeciesDataError(f"{path}:{line}: expected a finite number, got {value!r}")
    return number


def check_same_ids(reference: Iterable[int], reference_file: Path, ids: Iterable[int], path: Path) -> None:
    """Both files must list exactly the same ids; the message names the first id found in only one."""
    expected, found = set(reference), set(ids)
    if missing := sorted(expected - found):
        raise SpeciesDataError(
            f"{path}: image id {missing[0]} from {reference_file.name} is missing "
            f"({len(missing)} ids missing)"
        )
    if extra := sorted(found - expected):
        raise SpeciesDataError(
            f"{path}: image id {extra[0]} is not in {reference_file.name} ({len(extra)} unknown ids)"
        )


def list_images(folder: Path) -> list[Path]:
    """Image files in ``folder`` and its sub-folders, as torchvision's ``ImageFolder`` finds them (by
    suffix, sorted); other files, and hidden files or folders, are not images of the set."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def list_class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_matlab(path: Path, keys: Iterable[str], text_alternative: str) -> dict:
    """Arrays from a MATLAB ``.mat`` file via scipy, or an error saying how to do without scipy."""
    if importlib.util.find_spec("scipy") is None:
        raise SpeciesDataError(
            f"{path} is a MATLAB file and reading it needs scipy, which is not installed. "
            f"Install scipy, or convert it once elsewhere to the text layout: {text_alternative}"
        )
    from scipy.io import loadmat

    try:
        contents = loadmat(str(path), squeeze_me=True)
    except Exception as error:  # scipy raises several unrelated types for a bad file
        raise SpeciesDataError(f"cannot read MATLAB file {path}: {error}") from error
    for key in keys:
        if key not in contents:
            raise SpeciesDataError(f"{path}: MATLAB file has no variable {key!r}")
    return contents


def matlab_ints(contents: dict, key: str, path: Path) -> list[int]:
    """Variable ``key`` of a loaded MATLAB file as a flat list of ints, or an error naming the file."""
    try:
        return [int(value) for value in np.atleast_1d(contents[key])]
    except (TypeError, ValueError) as error:
        raise SpeciesDataError(f"{path}: MATLAB variable {key!r} must hold integers: {error}") from None
