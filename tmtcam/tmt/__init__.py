"""TMT: ACTE (regions + transferability), TMA (attention bias), decoders, sliding-window inference."""

from tmtcam.tmt.attention_bias import TransferableMaskAttention, key_bias, region_coherence_bias
from tmtcam.tmt.decoders import DECODERS, LinearDecoder, MaskTransformerDecoder, build_decoder
from tmtcam.tmt.domain_adversarial import GlobalDomainClassifier, GradientReversal
from tmtcam.tmt.regions import REGION_MODES, RegionPartitioner, Regions, grid_regions, patch_regions
from tmtcam.tmt.segmenter import METHODS, ACTEOptions, SegmenterOutput, TMAOptions, TMTSegmenter
from tmtcam.tmt.sliding_window import sliding_window_logits
from tmtcam.tmt.transferability import (
    PatchDomainDiscriminator,
    binary_entropy_bits,
    normalized_entropy,
    priority_map,
    region_mean,
    region_pool,
)

__all__ = [
    "DECODERS",
    "METHODS",
    "REGION_MODES",
    "ACTEOptions",
    "GlobalDomainClassifier",
    "GradientReversal",
    "LinearDecoder",
    "MaskTransformerDecoder",
    "PatchDomainDiscriminator",
    "RegionPartitioner",
    "Regions",
    "SegmenterOutput",
    "TMAOptions",
    "TMTSegmenter",
    "TransferableMaskAttention",
    "binary_entropy_bits",
    "build_decoder",
    "grid_regions",
    "key_bias",
    "normalized_entropy",
    "patch_regions",
    "priority_map",
    "region_coherence_bias",
    "region_mean",
    "region_pool",
    "sliding_window_logits",
]
