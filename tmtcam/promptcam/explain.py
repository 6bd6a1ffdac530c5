"""``tmtcam explain``: Prompt-CAM trait heatmaps for any folder of images, plus an HTML gallery.

    tmtcam explain --ckpt runs/cub/checkpoints/last.ckpt --images photos/ --out heatmaps/ [--class-index 17]
    tmtcam explain --ckpt runs/cub --images photos/ --out heatmaps/   # a run dir: its newest last*.ckpt

Images are prepared exactly as the data module's evaluation view (square resize to the checkpoint's
``resize_size``, centre crop), so a map explains what validation accuracy measured.
For each image: the predicted class, the explained class (``--class-index`` or the prediction), the
top-k heads of the greedy ranking with their score drops, written as ``<out>/<name>.png``; and
``<out>/index.html`` listing them all. The checkpoint's backbone is rebuilt from its saved reference
(model name + weights file), so that file must exist, unless the checkpoint holds a random backbone
itself (see :mod:`tmtcam.tasks.promptcam_classifier`).
"""

from __future__ import annotations

import argparse
import html
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from data_modules.normalization import Normalization, resolve_normalization
from data_modules.species.image_dataset import CorruptImageError, load_rgb
from data_modules.species.transforms import SpeciesTransform, build_eval_transform
from data_modules.species.validation import IMAGE_SUFFIXES, list_images  # what the species readers read
from tmtcam.backbones.loading import WeightsError
from tmtcam.environment import traceback_requested
from tmtcam.option_types import output_dir, positive_int
from tmtcam.promptcam.model import PromptCAM
from tmtcam.promptcam.rendering import explanation_caption, explanation_rows
from tmtcam.promptcam.trait_maps import explain_batch
from tmtcam.tasks.promptcam_classifier import PromptCAMClassifier
from tmtcam.training.checkpoint_compat import (
    CheckpointMismatch,
    check_checkpoint_file,
    checkpoint_in,
    last_checkpoints,
    mapped_checkpoint,
)


class ExplainInputError(ValueError):
    """An argument or input file ``tmtcam explain`` cannot use; the message names it."""


# printed as one line and exit code 2 by :func:`main`; anything else is a bug and keeps its traceback
INPUT_ERRORS = (ExplainInputError, FileNotFoundError, CheckpointMismatch, WeightsError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tmtcam explain", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--ckpt",
        required=True,
        type=Path,
        help="PromptCAMClassifier checkpoint (method: promptcam), or a run dir (its newest last*.ckpt)",
    )
    parser.add_argument("--images", required=True, type=Path, help="folder of images (searched recursively)")
    parser.add_argument(
        "--out", required=True, type=output_dir, help="output folder for PNG grids and index.html"
    )
    parser.add_argument(
        "--class-index", type=int, default=None, help="explain this class (default: the prediction)"
    )
    parser.add_argument(
        "--top-k", type=positive_int, default=3, help="heads kept by the greedy ranking and shown"
    )
    parser.add_argument(
        "--until-misclassified", action="store_true", help="keep removing heads while still correct"
    )
    parser.add_argument(
        "--image-size", type=positive_int, default=None, help="crop size (default: the backbone's img_size)"
    )
    parser.add_argument(
        "--resize-size",
        type=positive_int,
        default=None,
        help="square resize before the centre crop (default: the checkpoint's data module's, scaled to "
        "--image-size; else straight to the crop size)",
    )
    parser.add_argument(
        "--weights",
        type=Path,
        help="the backbone weights file, when it is no longer where the checkpoint says "
        "(checked against the SHA-256 the checkpoint recorded)",
    )
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument(
        "--device",
        type=torch_device,
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="cpu, cuda, cuda:1 ...",
    )
    return parser


def torch_device(text: str) -> str:
    """``--device``: a device torch knows and this machine has (else argparse's one-line refusal)."""
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device (cpu, cuda, cuda:1 ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: no CUDA GPU is visible; use --device cpu")
    return text


def find_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"--images: folder not found: {folder}")
    paths = list_images(folder)  # as the species readers list them: hidden files (._x.jpg) are not images
    if not paths:
        raise FileNotFoundError(f"--images: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")
    return paths


def load_image(path: Path, transform: SpeciesTransform) -> torch.Tensor:
    """Decoded as the species readers decode for training (16-bit, greyscale and CMYK alike);
    ``CorruptImageError`` (naming the file) when it cannot be."""
    return transform(load_rgb(path)).image


def load_batch(paths: list[Path], transform: SpeciesTransform) -> tuple[list[Path], list[torch.Tensor]]:
    """The images of ``paths`` that decode; each one that does not is reported and skipped, so one
    bad file in a folder of thousands does not stop the gallery."""
    kept, images = [], []
    for path in paths:
        try:
            images.append(load_image(path, transform))
        except CorruptImageError as err:
            print(f"tmtcam explain: skipped: {err}", file=sys.stderr)
            continue
        kept.append(path)
    return kept, images


def saved_data_hparams(ckpt: Path) -> dict:
    """The hyper-parameters of the data module a checkpoint was trained with (empty if not recorded)."""
    return mapped_checkpoint(ckpt).get("datamodule_hyper_parameters") or {}


def evaluation_resize(data: dict, image_size: int) -> int | None:
    """The square resize before a centre crop of ``image_size``, as the data module ``data``
    (:func:`saved_data_hparams`) did.

    Its ``resize_size`` is kept for its own crop size and scaled with any other crop (240 for 224
    becomes 480 for 448); ``None`` (not recorded, or no resize) resizes straight to ``image_size``.
    """
    resize, trained_size = data.get("resize_size"), data.get("image_size")
    if resize is None or not trained_size:
        return None
    return round(resize * image_size / trained_size)


def evaluation_normalization(data: dict) -> Normalization:
    """The ``(mean, std)`` the data module ``data`` normalised with (ImageNet's if not recorded)."""
    return resolve_normalization(data.get("mean"), data.get("std"))


def promptcam_checkpoint(path: Path) -> Path:
    """``--ckpt`` as given, or for a run dir its newest ``last*.ckpt`` of a ``method: promptcam`` model.

    A demo's or sweep's folder also holds the baselines' checkpoints (``linear_probe/``, ``vpt/``),
    which have no class prompts to explain; the newest checkpoint overall may be one of them.
    """
    candidates = last_checkpoints(path) if path.is_dir() else []
    if not candidates:
        return checkpoint_in(path, "--ckpt")  # the file as given, or the error naming what is missing
    methods = {}
    for candidate in candidates:
        methods[candidate] = mapped_checkpoint(candidate).get("hyper_parameters", {}).get("method")
        if methods[candidate] == "promptcam":
            return candidate
    found = ", ".join(f"{candidate.relative_to(path)} ({method})" for candidate, method in methods.items())
    raise ExplainInputError(f"--ckpt: no method=promptcam checkpoint under the folder {path}; found {found}")


def load_promptcam(
    ckpt: Path, device: str, weights: Path | None = None
) -> tuple[PromptCAM, PromptCAMClassifier]:
    overrides = {}
    if weights is not None:  # the saved backbone reference, at the file's new place
        saved = mapped_checkpoint(ckpt)["hyper_parameters"]
        overrides["backbone"] = {**saved["backbone"], "weights": str(weights)}
    module = PromptCAMClassifier.load_from_checkpoint(
        ckpt, map_location=device, weights_only=True, **overrides
    ).eval()
    if not isinstance(module.model, PromptCAM):
        raise ExplainInputError(
            f"--ckpt {ckpt} is a method={module.hparams.method!r} model; trait maps need method=promptcam"
        )
    return module.model.to(device), module


def output_name(path: Path, root: Path) -> str:
    """Unique PNG name for ``path`` (sub-folders joined with ``__``)."""
    return "__".join(path.relative_to(root).with_suffix("").parts) + ".png"


def write_gallery(out: Path, entries: list[tuple[str, str, str]]) -> Path:
    """``index.html`` with one figure per (png name, source path, caption)."""
    figures = "\n".join(
        f'<figure><img src="{html.escape(png)}" alt="{html.escape(source)}">'
        f"<figcaption><b>{html.escape(source)}</b><br>{html.escape(caption)}</figcaption></figure>"
        for png, source, caption in entries
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Prompt-CAM trait maps</title>"
        "<style>body{font-family:sans-serif} figure{margin:1em 0} img{max-width:100%}</style></head>"
        f"<body><h1>Prompt-CAM trait maps</h1>\n{figures}\n</body></html>\n"
    )
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """``tmtcam explain``: exit 0, or 2 with one line naming the unusable argument or file."""
    args = build_parser().parse_args(argv)
    try:
        explain_folder(args)
    except INPUT_ERRORS as error:
        if traceback_requested():
            raise
        print(f"tmtcam explain: error: {error}", file=sys.stderr)
        return 2
    return 0


def explain_folder(args: argparse.Namespace) -> Path:
    """Write a grid per image and the gallery; returns the gallery's path."""
    ckpt = promptcam_checkpoint(args.ckpt)
    check_checkpoint_file(ckpt, "PromptCAMClassifier", None, source="--ckpt")
    model, module = load_promptcam(ckpt, args.device, args.weights)
    if args.class_index is not None and not 0 <= args.class_index < model.num_classes:
        raise ExplainInputError(f"--class-index {args.class_index} outside [0, {model.num_classes})")
    top_k = min(args.top_k, model.backbone.num_heads)
    image_size = args.image_size or int(module.hparams.backbone.get("img_size", 224))
    if image_size % model.backbone.patch_size:
        raise ExplainInputError(
            f"--image-size {image_size}: must be a multiple of the backbone's patch size {model.backbone.patch_size}"
        )
    data = saved_data_hparams(ckpt)
    normalization = evaluation_normalization(data)
    resize = args.resize_size or evaluation_resize(data, image_size)
    try:
        transform = build_eval_transform(image_size, resize, normalization)
    except ValueError as error:
        raise ExplainInputError(f"--resize-size {resize}: {error}") from None
    paths = find_images(args.images)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ExplainInputError(f"--out {args.out}: cannot create the folder ({error.strerror})") from None
    names = module.hparams.class_names
    entries = []
    for start in range(0, len(paths), args.batch_size):
        batch_paths, decoded = load_batch(paths[start : start + args.batch_size], transform)
        if not decoded:
            continue
        images = torch.stack(decoded).to(args.device)
        explanation = explain_batch(
            model, images, args.class_index, top_k=top_k, until_misclassified=args.until_misclassified
        )
        rows = explanation_rows(images, explanation, names, heads_shown=top_k, normalization=normalization)
        for index, (path, row) in enumerate(zip(batch_paths, rows, strict=True)):
            png = output_name(path, args.images)
            Image.fromarray(row).save(args.out / png)
            entries.append(
                (png, str(path.relative_to(args.images)), explanation_caption(explanation, index, names))
            )
    if not entries:
        raise ExplainInputError(f"--images {args.images}: none of its {len(paths)} images could be decoded")
    gallery = write_gallery(args.out, entries)
    skipped = f" ({len(paths) - len(entries)} skipped)" if len(entries) < len(paths) else ""
    print(f"explained {len(entries)} images{skipped} -> {gallery}", file=sys.stderr)
    return gallery
