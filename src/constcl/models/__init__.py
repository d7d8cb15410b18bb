"""ConST-CL networks: R3D backbones, heads and the model wrapper."""

from constcl.models.constcl import LOCAL_SOURCES, VARIANTS, ConSTCL, LossWeights, build_model
from constcl.models.global_head import GlobalHead
from constcl.models.r3d import BACKBONES, R3D, R3DSpec, build_backbone, r3d_50
from constcl.models.region_head import (
    DecoderLayer,
    PositionalCode,
    RegionHead,
    context_indices,
    roi_features,
)

__all__ = [
    "BACKBONES", "LOCAL_SOURCES", "VARIANTS", "ConSTCL", "DecoderLayer", "GlobalHead",
    "LossWeights", "PositionalCode", "R3D", "R3DSpec", "RegionHead", "build_backbone",
    "build_model", "context_indices", "r3d_50", "roi_features",
]
