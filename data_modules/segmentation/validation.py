"""Decoding and checking segmentation files; every error names the file (or folder) at fault.

A wrong root, a colour mask where an id mask belongs, or a label whose size does not match its
image otherwise surfaces as a shape error deep inside a collate or a loss. Indexing checks folders
and image <-> mask pairing up front; decoding checks happen per item (decoding every mask of a
50k-image dataset at setup would take minutes) or all at once with ``verify_dataset``. Images in
unusual modes are converted with one :class:`ImageModeWarning` per kind when the conversion is
safe, and refused when it is not (docs/datasets.md, "When data is wrong", lists each case).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from data_modules.files import read_lines, require_dir


class SegmentationDataError(ValueError):
    """Folders, images or masks that are missing, malformed or inconsistent."""


class CorruptImageError(SegmentationDataError):
    """An image or mask file that exists but cannot be decoded."""


class LabelIdError(SegmentationDataError):
    """A mask holding ids outside its dataset's label set."""


class MaskSizeError(SegmentationDataError):
    """A mask whose size differs from its image's."""


class MissingCounterpartError(SegmentationDataError):
    """An image without its mask, or a mask without its image."""


class ImageModeError(SegmentationDataError):
    """An image stored with pixels whose value range cannot be known (32-bit integer or float)."""


class MaskFormatError(SegmentationDataError):
    """A mask that is not a single-channel id image (typically the colour visualisation)."""


class ImageModeWarning(UserWarning):
    """An image or mask in an unusual mode was converted; the message names the first such file."""


class UnmappedIdWarning(UserWarning):
    """Masks hold raw ids a user's ``id_map`` does not list; they become 255 (ignored)."""


class ConversionNotices:
    """Warns once per kind of conversion (e.g. ``image mode L``), naming the first file converted.

    One instance per dataset (each DataLoader worker holds its own copy): a greyscale dataset would
    otherwise print one warning per image per epoch, and one named example is what a user needs.
    """

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def warn(self, kind: str, message: str) -> None:
        if kind in self.seen:
            return
        self.seen.add(kind)
        warnings.warn(
            f"{message}; further {kind} files of this dataset are converted silently", ImageModeWarning, 3
        )


# Modes PIL opens images in, and what loading does with each (documented in docs/datasets.md).
LOSSLESS_RGB_MODES = frozenset({"RGB", "P"})  # P: a palette image; its colours are exact
SIXTEEN_BIT_GREY_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
UNKNOWN_RANGE_MODES = frozenset({"I", "F"})
ID_MASK_MODES = frozenset({"L", "P", "I", *SIXTEEN_BIT_GREY_MODES})
GREY_AS_COLOUR_MASK_MODES = frozenset({"RGB", "RGBA", "LA"})


def load_rgb(path: Path, notices: ConversionNotices | None = None) -> np.ndarray:
    """Decode an image to (H, W, 3) uint8 RGB.

    RGB and palette images load as they are. Greyscale, bilevel, alpha (dropped), CMYK and other
    8-bit modes are converted with an :class:`ImageModeWarning`; 16-bit greyscale keeps its top 8
    bits (PIL's own conversion would clip it to white) with a warning; 32-bit integer and float
    images are refused, since nothing says which values are black and white. Truncated files are
    corrupt, not silently padded.
    """
    notices = notices or ConversionNotices()
    try:
        with Image.open(path) as image:
            mode = image.mode
            if mode in UNKNOWN_RANGE_MODES:
                raise ImageModeError(
                    f"image {path} has mode {mode!r} (32-bit integer or float pixels of unknown range); "
                    "save it as 8-bit RGB"
                )
            if mode in SIXTEEN_BIT_GREY_MODES:
                grey = (np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8)
                notices.warn(
                    f"image mode {mode}", f"image {path} is 16-bit greyscale; kept its top 8 bits as RGB"
                )
                return np.repeat(grey[..., None], 3, axis=2)
            if mode not in LOSSLESS_RGB_MODES:
                notices.warn(f"image mode {mode}", f"image {path} has mode {mode!r}; converted to RGB")
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except SegmentationDataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise CorruptImageError(f"cannot decode image {path}: {error}") from error


def load_label_image(path: Path, notices: ConversionNotices | None = None) -> np.ndarray:
    """Decode a single-channel id mask (8/16/32-bit grey or palette indices) to (H, W) integers.

    Palette PNGs (GTA5, Mapillary) are read as their indices, not converted to colours; bilevel
    masks give ids 0 and 1. A grey mask saved as RGB(A) or with alpha (all colour channels equal)
    is read from its first channel with a warning; a true colour mask is refused: it is almost
    always the ``*_color.png`` visualisation, not the ids.
    """
    notices = notices or ConversionNotices()
    try:
        with Image.open(path) as image:
            mode = image.mode
            if mode in ID_MASK_MODES:
                return np.asarray(image)
            if mode == "1":
                return np.asarray(image, dtype=np.uint8)
            if mode in GREY_AS_COLOUR_MASK_MODES:
                pixels = np.asarray(image)
                colour = pixels[..., :1] if mode == "LA" else pixels[..., :3]
                if (colour == colour[..., :1]).all():
                    notices.warn(
                        f"mask mode {mode}",
                        f"label image {path} has mode {mode!r} with equal channels; read ids from its first channel",
                    )
                    return np.ascontiguousarray(colour[..., 0])
            raise MaskFormatError(
                f"label image {path} has mode {mode!r}; expected a single-channel id mask "
                "(grey or palette), not a colour visualisation"
            )
    except FileNotFoundError:
        raise FileNotFoundError(f"label file not found: {path}") from None
    except SegmentationDataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise CorruptImageError(f"cannot decode label image {path}: {error}") from error


def load_first_channel_16bit(path: Path, notices: ConversionNotices | None = None) -> np.ndarray:
    """The first channel of a (possibly 16-bit, 3-channel) PNG, as SYNTHIA stores its class ids.

    PIL reduces 48-bit RGB PNGs to 8 bits, so OpenCV reads it; OpenCV orders channels BGR(A), hence
    the file's first channel is OpenCV's third. ``notices`` is unused (nothing is converted); it
    keeps the signature of :func:`load_label_image`.
    """
    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path}")
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise CorruptImageError(f"cannot decode label image {path}")
    return pixels[:, :, 2] if pixels.ndim == 3 else pixels


def fit_mask_to_image(
    image: np.ndarray,
    mask: np.ndarray,
    image_path: Path,
    mask_path: Path,
    tolerance: float = 0.0,
    notices: ConversionNotices | None = None,
) -> np.ndarray:
    """The mask, at its image's size; refuses a mismatch larger than ``tolerance`` of either side.

    ``tolerance`` is the dataset's known slack (GTA5 ships a few labels a few pixels off their
    image, which mmseg's resize hides); within it the mask is resized nearest-neighbour with an
    :class:`ImageModeWarning`. Anything larger is a wrong pairing, not slack: :class:`MaskSizeError`.
    """
    (image_h, image_w), (mask_h, mask_w) = image.shape[:2], mask.shape[:2]
    if (image_h, image_w) == (mask_h, mask_w):
        return mask
    within = abs(mask_h - image_h) <= tolerance * image_h and abs(mask_w - image_w) <= tolerance * image_w
    sizes = f"mask {mask_path} is {mask_w}x{mask_h} (WxH) but its image {image_path} is {image_w}x{image_h}"
    if not within:
        slack = f" (more than this dataset's {tolerance:.0%} slack)" if tolerance else ""
        raise MaskSizeError(sizes + slack)
    (notices or ConversionNotices()).warn(
        "mask size",
        f"{sizes}; resized the mask (nearest) to the image, within the dataset's {tolerance:.0%} slack",
    )
    # exact nearest neighbour, as the transforms resize masks (transforms.MASK_INTERPOLATION)
    return cv2.resize(mask, (image_w, image_h), interpolation=cv2.INTER_NEAREST_EXACT)


def index_files(
    folder: Path, suffix: str, what: str, recursive: bool = True, required: bool = True
) -> dict[str, Path]:
    """Files under ``folder`` whose name ends with ``suffix``, keyed by relative path minus the suffix.

    The key is what an image and its mask share (``aachen/aachen_000000_000019`` for Cityscapes).
    An empty result is an error when ``required``: a misspelt split or suffix would otherwise train
    on nothing.
    """
    require_dir(folder, f"{what} folder")
    pattern = f"**/*{suffix}" if recursive else f"*{suffix}"
    files = {}
    for path in sorted(folder.glob(pattern)):
        if path.is_file():
            relative = path.relative_to(folder).as_posix()
            files[relative[: -len(suffix)]] = path
    if not files and required:
        raise SegmentationDataError(f"no {what} files ending in {suffix!r} under {folder}")
    return files


def pair_files(
    images: Mapping[str, Path], masks: Mapping[str, Path], mask_dir: Path, mask_suffix: str
) -> list[tuple[Path, Path]]:
    """Match images and masks by key; either side missing its counterpart is an error naming it."""
    for key, image in images.items():
        if key not in masks:
            raise MissingCounterpartError(
                f"image {image} has no mask: expected {mask_dir / (key + mask_suffix)}"
            )
    for key, mask in masks.items():
        if key not in images:
            raise MissingCounterpartError(f"mask {mask} has no matching image (key {key!r})")
    return [(images[key], masks[key]) for key in sorted(images)]


def read_name_list(path: Path) -> list[str]:
    """Non-blank, stripped lines of a split file (one image name per line)."""
    names = read_lines(path, "split file", SegmentationDataError)
    if not names:
        raise SegmentationDataError(f"split file {path} lists no images")
    return names
