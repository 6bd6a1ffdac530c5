"""TMA: the ACTE priority map as an additive bias on the ViT's attention logits.

In each TMA block every query's logit for key j gets ``beta_h * pi(j)``: a per-head learnable
scale times the priority of the key's patch. A bias that is constant along a query's row would be
a no-op under softmax, so the bias is on *keys*: only the differences between keys matter, and a
positive beta moves attention mass towards low-transferability, uncertain regions. With all keys
at logit 0 and one region of m out of n keys at priority 1, that region gets
``m e^beta / (m e^beta + n - m)`` of the mass (the unit test checks exactly this).

The optional region-coherence term adds ``gamma`` where query and key share a region, so tokens
also pool within their region (off by default: it makes the bias (B, 1, S, S) instead of
(B, H, 1, S)). Prefix tokens (CLS, registers) get no bias as keys and no region-coherence term; as
queries they see the same key bias as the patches (the decoder reads only the patch tokens).

The bias reaches timm's blocks through the backbone's additive ``attn_mask`` hook, so the blocks
keep PyTorch's ``scaled_dot_product_attention``. Because beta learns, the bias needs a gradient,
which picks the kernel: on CUDA the memory-efficient one (not flash), on the CPU the math one
(measured at the small CPU segmenter's shape, 16 x 3 heads x 65 tokens: 2.8 ms forward + backward
per block against 2.0 ms without a bias).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tmtcam.tmt.regions import Regions


def key_bias(priority: torch.Tensor, beta: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """(B, N) priority and (H,) beta -> (B, H, 1, num_prefix + N) additive bias on keys."""
    pad = priority.new_zeros(priority.shape[0], num_prefix)
    keys = torch.cat([pad, priority], dim=1)  # (B, S)
    return beta.to(priority.dtype)[None, :, None, None] * keys[:, None, None, :]


def region_coherence_bias(regions: Regions, gamma: float, num_prefix: int) -> torch.Tensor:
    """(B, 1, S, S): ``gamma`` where query and key patches share a region, 0 elsewhere."""
    labels = regions.labels
    same = (labels[:, :, None] == labels[:, None, :]).float() * gamma
    return nn.functional.pad(same, (num_prefix, 0, num_prefix, 0))[:, None]


class TransferableMaskAttention(nn.Module):
    """Learnable per-head scales for the TMA blocks and the bias they produce.

    Args:
        num_heads: attention heads of the backbone.
        layers: backbone block indices that receive the bias.
        beta_init: initial value of every head's scale (0 starts as plain attention).
        gamma: region-coherence bias (0 = off).
    """

    def __init__(
        self, num_heads: int, layers: Sequence[int], beta_init: float = 1.0, gamma: float = 0.0
    ) -> None:
        super().__init__()
        if not layers:
            raise ValueError("tma.layers must name at least one backbone block")
        self.layers = [int(layer) for layer in layers]
        self.beta = nn.Parameter(torch.full((len(self.layers), num_heads), float(beta_init)))
        self.gamma = float(gamma)

    def applies_to(self, block: int) -> bool:
        return block in self.layers

    def forward(
        self, block: int, priority: torch.Tensor, regions: Regions | None, num_prefix: int
    ) -> torch.Tensor:
        """The additive attention bias for ``block`` (broadcastable to (B, H, S, S))."""
        bias = key_bias(priority, self.beta[self.layers.index(block)], num_prefix)
        if self.gamma and regions is not None:
            bias = bias + region_coherence_bias(regions, self.gamma, num_prefix).to(bias.dtype)
        return bias
