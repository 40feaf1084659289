"""2D keypoint files in: readers (``formats``), joint-layout conversion (``convert``),
missing-detection filling (``fill``) and the engine-input preparation that combines them
(``prepare``). ``gastrt.lifting`` ties them to an engine."""
from ..errors import GastrtError as UserError
from .convert import (DEMO_ROTATION, FORMATS, LayoutPlan, camera_to_world, coco_to_h36m,
                      engine_input_layout, guess_format, image_coordinates, mpii_to_h36m,
                      check_size_fits, nonzero_frames, normalize_screen, parse_size, plan_layout, qrot,
                      rebase_height, refuse_pixels, wholebody_to_h36m_toes, PIXEL_LIMIT)
from .fill import MAX_GAP_RECEPTIVE_FIELDS, FillResult, check_gaps, fill_missing, longest_gap, present_mask
from .formats import CONTAINERS, RawKeypoints, array_keypoints, detect_container, read_keypoints
from .prepare import LAYOUT_ALIASES, KeypointWarning, PreparedKeypoints, prepare_keypoints, resolve_max_gap

__all__ = [
    "UserError", "DEMO_ROTATION", "FORMATS", "LayoutPlan", "camera_to_world", "coco_to_h36m",
    "guess_format", "image_coordinates", "mpii_to_h36m", "nonzero_frames", "normalize_screen",
    "plan_layout", "qrot", "rebase_height", "wholebody_to_h36m_toes", "FillResult",
    "fill_missing", "present_mask", "CONTAINERS", "RawKeypoints", "detect_container",
    "read_keypoints", "parse_size", "engine_input_layout", "check_size_fits",
    "MAX_GAP_RECEPTIVE_FIELDS", "check_gaps", "longest_gap", "array_keypoints", "LAYOUT_ALIASES",
    "KeypointWarning", "PreparedKeypoints", "prepare_keypoints", "resolve_max_gap", "refuse_pixels",
    "PIXEL_LIMIT",
]
