"""Shared ViT core: timm ViTs with attention-bias, prompt and last-block-attention hooks."""

from tmtcam.backbones.config import BackboneConfig, BackboneSetting, backbone_mapping, build_backbone
from tmtcam.backbones.loading import WeightsError, build_timm_vit
from tmtcam.backbones.prompts import PromptInsertion
from tmtcam.backbones.vit import BackboneOutput, ViTBackbone, blur_prompt_rows

__all__ = [
    "BackboneConfig",
    "BackboneOutput",
    "BackboneSetting",
    "PromptInsertion",
    "ViTBackbone",
    "WeightsError",
    "backbone_mapping",
    "blur_prompt_rows",
    "build_backbone",
    "build_timm_vit",
]
