"""Point Transformer V3 (Wu et al., CVPR 2024), an independent pure-PyTorch implementation adapted for ARC."""
from .attention import PatchLayout, SerializedAttention, patch_layout
from .model import Block, Embedding, PointTransformerV3
from .norm import PointBatchNorm, PointLayerNorm
from .point import GRID_ORIGINS, Point, PointError, make_point, voxelize
from .pooling import SerializedPooling, segment_max, segment_mean
from .serialization import ORDERS, encode, hilbert_encode, morton_encode
from .sparse_conv import NeighbourMap, Sites, SubMConv3d, neighbour_map, subm_conv_torch, use_spconv, voxel_sites

__all__ = [
    "GRID_ORIGINS", "ORDERS", "Block", "Embedding", "PatchLayout", "Point", "PointBatchNorm", "PointError", "PointLayerNorm", "PointTransformerV3",
    "SerializedAttention", "SerializedPooling", "Sites", "SubMConv3d", "encode", "hilbert_encode", "make_point",
    "morton_encode", "NeighbourMap", "neighbour_map", "patch_layout", "segment_max", "segment_mean", "subm_conv_torch",
    "use_spconv", "voxel_sites", "voxelize",
]
