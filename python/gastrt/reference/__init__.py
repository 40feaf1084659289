"""Eager PyTorch reference models of GAST-Net, VideoPose3D and RIE.

The parity oracle of the test suite and the "eager PyTorch" baseline of the benchmarks: same
state_dict names/shapes and operator order as the original repositories. Requires torch;
`import gastrt` never imports this package.
"""
from .factory import FAMILIES, PRESETS, build_model, make_checkpoint, random_state_dict
from .gast import (GlobalGraph, GraphAttentionBlock, LocalGraph, MultiGlobalGraph, SemCHGraphConv,
                   SpatioTemporalModel, SpatioTemporalModelOptimized1f, local_graph_adjacencies)
from .rie import FCBlock, Linear, RIEModel, TemporalBlock
from .videopose3d import TemporalModel, TemporalModelOptimized1f

__all__ = [
    "FAMILIES", "PRESETS", "build_model", "make_checkpoint", "random_state_dict",
    "SemCHGraphConv", "LocalGraph", "GlobalGraph", "MultiGlobalGraph", "GraphAttentionBlock",
    "SpatioTemporalModel", "SpatioTemporalModelOptimized1f", "local_graph_adjacencies",
    "TemporalModel", "TemporalModelOptimized1f",
    "RIEModel", "TemporalBlock", "FCBlock", "Linear",
]
