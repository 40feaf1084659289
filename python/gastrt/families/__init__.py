"""Checkpoint -> plan lowering, one module per family (gast, videopose3d, rie)."""
from .detect import Lowered, detect_and_lower

__all__ = ["Lowered", "detect_and_lower"]
