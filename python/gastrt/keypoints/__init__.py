"""2D keypoint files in: readers (``formats``), joint-layout conversion (``convert``) and
missing-detection filling (``fill``). ``gastrt.lifting`` ties them to an engine."""
from ..errors import GastrtError as UserError
from .convert import (DEMO_ROTATION, FORMATS, LayoutPlan, camera_to_world, coco_to_h36m,
                      engine_input_layout, guess_format, image_coordinates, mpii_to_h36m,
                      check_size_fits, nonzero_frames, normalize_screen, parse_size, plan_layout, qrot,
                      rebase_height, wholebody_to_h36m_toes)
from .fill import FillResult, fill_missing, present_mask
from .formats import CONTAINERS, RawKeypoints, detect_container, read_keypoints

__all__ = [
    "UserError", "DEMO_ROTATION", "FORMATS", "LayoutPlan", "camera_to_world", "coco_to_h36m",
    "guess_format", "image_coordinates", "mpii_to_h36m", "nonzero_frames", "normalize_screen",
    "plan_layout", "qrot", "rebase_height", "wholebody_to_h36m_toes", "FillResult",
    "fill_missing", "present_mask", "CONTAINERS", "RawKeypoints", "detect_container",
    "read_keypoints", "parse_size", "engine_input_layout", "check_size_fits",
]
