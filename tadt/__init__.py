"""TADT: the Task-Aware Dynamic Transformer and its Baseline backbone (paper section 3).

Registered as extractors ``baseline`` and ``tadt``; see ``tadt/README.md``
for every choice the paper left open.
"""
from tadt.loss import ALPHA, LAMBDA_BETA, intensity_loss, intensity_threshold
from tadt.model import (
    TADT,
    Baseline,
    GlobalSelfAttention,
    LocalSelfAttention,
    MultiScaleTransformerBlock,
    MultiScaleTransformerGroup,
    SliceableLinear,
    TaskAwareRoutingController,
)
from tadt.routing import RoutingInfo, routing_string, routing_tensor

__all__ = [
    "ALPHA", "LAMBDA_BETA", "intensity_loss", "intensity_threshold", "TADT", "Baseline",
    "GlobalSelfAttention", "LocalSelfAttention", "MultiScaleTransformerBlock",
    "MultiScaleTransformerGroup", "RoutingInfo", "SliceableLinear", "TaskAwareRoutingController",
    "routing_string", "routing_tensor",
]
