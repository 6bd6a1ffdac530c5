"""Where the time of one TMT training step goes, by component, from ``torch.profiler``.

Each component of the segmenter (patch embedding, every ViT block, ACTE's k-means and the rest of
its region step, discriminator, uncertainty probe, TMA bias, decoder, loss) is wrapped in a
``record_function`` range for the duration of the profile only, through module hooks and thin
proxies on this one model instance: the library code is profiled as it is, not edited. Backward
and the optimiser step are single ranges (autograd does not attribute backward ops to modules).
The profiler's own per-op overhead inflates small ops a little, so the table gives shares of the
profiled step next to the un-profiled step time.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

from tmtcam.bench.training_steps import SegmentationBatch, segmentation_batch, segmentation_task
from tmtcam.tasks.tmt_segmentation import TMTSegmentation

PREFIX = "bench::"
KMEANS = "ACTE k-means"
REGIONS = "ACTE regions (features, adaptive k)"


class _Ranged:
    """Proxy that runs ``target(...)`` inside a named profiler range and forwards everything else."""

    def __init__(self, target: Any, label: str) -> None:
        self._target, self._label = target, label

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with record_function(PREFIX + self._label):
            return self._target(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


def _range_hooks(module: nn.Module, label: str) -> list[Any]:
    """Forward pre/post hooks that open and close a profiler range around ``module``."""
    open_ranges: list[record_function] = []

    def enter(_module: nn.Module, _inputs: Any) -> None:
        scope = record_function(PREFIX + label)
        scope.__enter__()
        open_ranges.append(scope)

    def leave(_module: nn.Module, _inputs: Any, _output: Any) -> None:
        open_ranges.pop().__exit__(None, None, None)

    return [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]


@contextmanager
def labelled_components(task: TMTSegmentation) -> Iterator[None]:
    """Label the segmenter's parts for the profiler; everything is restored on exit."""
    segmenter = task.segmenter
    vit = segmenter.backbone.vit
    modules: dict[str, nn.Module] = {"patch embedding": vit.patch_embed, "decoder": segmenter.decoder}
    modules.update({f"ViT block {i}": block for i, block in enumerate(vit.blocks)})
    if segmenter.uses_acte:
        modules.update(
            {"ACTE discriminator": segmenter.discriminator, "ACTE uncertainty probe": segmenter.probe,
             "TMA bias": segmenter.tma}
        )  # fmt: skip
    handles = [handle for label, module in modules.items() for handle in _range_hooks(module, label)]
    with ExitStack() as restore:
        if segmenter.uses_acte:
            partitioner = segmenter.partitioner
            kmeans = partitioner.kmeans
            kmeans.cluster_many = _Ranged(kmeans.cluster_many, KMEANS)
            segmenter.partitioner = _Ranged(partitioner, REGIONS)
            restore.callback(delattr, kmeans, "cluster_many")
            restore.callback(setattr, segmenter, "partitioner", partitioner)
        task._losses = _Ranged(task._losses, "loss")
        restore.callback(delattr, task, "_losses")
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


def _profiled_step(task: TMTSegmentation, batch: SegmentationBatch, optimizer: torch.optim.Optimizer) -> None:
    optimizer.zero_grad(set_to_none=True)
    with record_function(PREFIX + "forward (all)"):
        total = task.step_loss(batch.images, batch.masks, batch.sizes, [1.0, 1.0])
    with record_function(PREFIX + "backward"):
        total.backward()
    with record_function(PREFIX + "optimizer step"):
        optimizer.step()


def profile_step(method: str = "tmt", batch_size: int = 8, steps: int = 5, warmup: int = 2) -> dict[str, Any]:
    """ms per step of each labelled component, their share, the step time, and the top ATen ops."""
    task = segmentation_task(method)
    batch = segmentation_batch(batch_size)
    optimizer = task.build_optimizer()
    with labelled_components(task):
        step: Callable[[], None] = lambda: _profiled_step(task, batch, optimizer)  # noqa: E731
        for _ in range(warmup):
            step()
        plain = []
        for _ in range(steps):
            start = time.perf_counter()
            step()
            plain.append(time.perf_counter() - start)
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            for _ in range(steps):
                step()
    events = profiler.key_averages()
    ranges = {
        e.key[len(PREFIX) :]: e.cpu_time_total / 1000 / steps for e in events if e.key.startswith(PREFIX)
    }
    ops = sorted(
        (e for e in events if not e.key.startswith(PREFIX) and e.key.startswith("aten::")),
        key=lambda e: e.self_cpu_time_total,
        reverse=True,
    )
    return {
        "method": method,
        "batch": f"{batch_size} source + {batch_size} target, {tuple(batch.images.shape[-2:])} px",
        "step_ms_unprofiled": round(statistics.median(plain) * 1000, 1),
        # lists of [name, ms], not mappings: the order (pass order; slowest first) must survive JSON
        "components_ms": [[name, ms] for name, ms in _exclusive_components(ranges).items()],
        "top_ops_self_ms": [[e.key, round(e.self_cpu_time_total / 1000 / steps, 2)] for e in ops[:8]],
    }


def _exclusive_components(ranges: dict[str, float]) -> dict[str, float]:
    """Per-component ms with nested ranges made exclusive, plus the forward remainder and the total."""
    parts = dict(ranges)
    forward = parts.pop("forward (all)")
    if REGIONS in parts and KMEANS in parts:
        parts[REGIONS] -= parts[KMEANS]
    parts["forward, unlabelled (embedding adds, norms, glue)"] = forward - sum(
        value for key, value in parts.items() if key not in ("backward", "optimizer step")
    )
    parts["total (profiled)"] = forward + parts["backward"] + parts["optimizer step"]
    return {key: round(value, 2) for key, value in parts.items()}
