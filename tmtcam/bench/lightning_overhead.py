"""Lightning training loop vs a plain PyTorch loop on the same model, data and optimizer.

The model is the project's small CPU ViT with a linear head, the data an in-memory tensor set, so
the ratio isolates the framework's per-step cost (hooks, logging, progress bar, checkpointing).
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tmtcam.backbones import ViTBackbone


class _Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = ViTBackbone("vit_tiny_patch16_224", img_size=64, patch_size=8, embed_dim=192, depth=6, num_heads=3)
        self.head = nn.Linear(192, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images).patch_tokens.mean(1))


class _LitClassifier(L.LightningModule):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _index: int) -> torch.Tensor:
        images, labels = batch
        loss = nn.functional.cross_entropy(self.model(images), labels)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-4)


def _loader(steps: int, batch_size: int) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(steps * batch_size, 3, 64, 64, generator=generator)
    labels = torch.randint(0, 10, (steps * batch_size,), generator=generator)
    return DataLoader(TensorDataset(images, labels), batch_size=batch_size, shuffle=False)


def _plain_loop(steps: int, batch_size: int) -> float:
    torch.manual_seed(0)
    model = _Classifier().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loader = _loader(steps, batch_size)
    start = time.perf_counter()
    for images, labels in loader:
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        loss.item()  # the Lightning loop syncs the logged loss each step; do the same here
    return steps * batch_size / (time.perf_counter() - start)


def _lightning_loop(steps: int, batch_size: int, root: str) -> float:
    torch.manual_seed(0)
    module = _LitClassifier(_Classifier())
    trainer = L.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=root,
        num_sanity_val_steps=0,
    )
    loader = _loader(steps, batch_size)
    start = time.perf_counter()
    trainer.fit(module, loader)
    return steps * batch_size / (time.perf_counter() - start)


def run(root: str, steps: int = 30, batch_size: int = 16, repeats: int = 3) -> dict[str, Any]:
    """img/s of both loops, interleaved over ``repeats`` rounds; median ratio Lightning / plain."""
    plain, lightning = [], []
    _plain_loop(3, batch_size)  # warm caches and thread pools before the first measured round
    for _ in range(repeats):
        plain.append(_plain_loop(steps, batch_size))
        lightning.append(_lightning_loop(steps, batch_size, root))
    ratios = sorted(lit / ref for lit, ref in zip(lightning, plain, strict=True))
    return {
        "plain_img_per_s": [round(v, 1) for v in plain],
        "lightning_img_per_s": [round(v, 1) for v in lightning],
        "lightning_ratio": round(ratios[len(ratios) // 2], 3),
        "ratio_spread": [round(ratios[0], 3), round(ratios[-1], 3)],
    }
