"""Prompt-CAM: class prompts on a frozen ViT, per-class trait maps, batched head ranking, baselines."""

from tmtcam.promptcam.baselines import LinearProbe, VPTClassifier
from tmtcam.promptcam.head_ranking import HeadRanking, rank_heads_batched, rank_heads_naive
from tmtcam.promptcam.model import FrozenBackboneModel, PromptCAM, PromptCAMOutput
from tmtcam.promptcam.prompts import ClassPrompts, PromptVariant, parse_prompt_variant, prompt_init_bound
from tmtcam.promptcam.trait_maps import TraitExplanation, explain_batch, prompt_attention_maps, top_head_map

__all__ = [
    "ClassPrompts",
    "FrozenBackboneModel",
    "HeadRanking",
    "LinearProbe",
    "PromptCAM",
    "PromptCAMOutput",
    "PromptVariant",
    "TraitExplanation",
    "VPTClassifier",
    "explain_batch",
    "parse_prompt_variant",
    "prompt_attention_maps",
    "prompt_init_bound",
    "rank_heads_batched",
    "rank_heads_naive",
    "top_head_map",
]
