"""File checks shared by the segmentation and species readers.

Both families of readers open user-supplied folders and text files (split lists, annotation
tables). Python's own errors there (``FileNotFoundError`` from deep inside a listing,
``UnicodeDecodeError`` with neither path nor hint) read as bugs; these name the file and say what
to do, and each reader family raises its own error type so that its callers can catch it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def require_dir(path: Path, what: str) -> Path:
    """``path`` if it is a folder, else ``FileNotFoundError`` saying which folder was expected."""
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path} is not a directory")
    return path


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else ``FileNotFoundError`` saying which file was expected."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def read_lines(path: Path, what: str, error_type: type[ValueError]) -> list[str]:
    """The non-blank lines of a one-name-per-line file (split lists, class names), stripped."""
    with require_file(path, what).open(encoding="utf-8") as handle, utf8_text(path, error_type, what):
        return [line.strip() for line in handle if line.strip()]


@contextmanager
def utf8_text(path: Path, error_type: type[ValueError], what: str = "") -> Iterator[None]:
    """While reading ``path`` as text: a byte that is not UTF-8 raises ``error_type`` naming the file
    (after ``what`` it is, if given), the offset and the byte (a Latin-1 export is the usual cause)."""
    try:
        yield
    except UnicodeDecodeError as error:
        byte = error.object[error.start : error.start + 1]
        named = f"{what} {path}" if what else str(path)
        raise error_type(
            f"{named}: not UTF-8 text (byte {error.start} is {byte!r}); save it as UTF-8"
        ) from None
