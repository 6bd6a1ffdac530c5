"""Shared ViT core: timm ViTs with attention-bias, prompt and last-block-attention hooks."""

from tmtcam.backbones.config import build_backbone
from tmtcam.backbones.loading import WeightsError, build_timm_vit
from tmtcam.backbones.prompts import PromptInsertion
from tmtcam.backbones.vit import BackboneOutput, ViTBackbone, blur_prompt_rows

__all__ = [
    "BackboneOutput",
    "PromptInsertion",
    "ViTBackbone",
    "WeightsError",
    "blur_prompt_rows",
    "build_backbone",
    "build_timm_vit",
]
