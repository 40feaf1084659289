"""``gastrt render``: a `gastrt lift` output as a 3D skeleton animation next to its 2D input.

MP4 when ffmpeg is on PATH (GIF via the pillow writer otherwise), GIF, or PNG (one frame).
matplotlib is an optional extra (``pip install gastrt[render]``); pyplot is never imported,
so the caller's backend is left alone.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from typing import Any

import numpy as np

from .engine_file import temp_prefix
from .keypoints import UserError, image_coordinates
from .lifting import load_result
from .skeletons import skeleton_for

__all__ = ["render_result", "add_parsers"]

# COCO-17 bones (for engines that take COCO-ordered 2D input) and its right-side joints
_COCO17_BONES = ((1, 0), (2, 0), (3, 1), (4, 2), (6, 5), (7, 5), (9, 7), (8, 6), (10, 8),
                 (11, 5), (12, 6), (12, 11), (13, 11), (15, 13), (14, 12), (16, 14))
_COCO17_RIGHT = frozenset((2, 4, 6, 8, 10, 12, 14, 16))

_MISSING = ("rendering needs matplotlib, which is not installed: "
            "pip install gastrt[render]")


def _matplotlib() -> Any:
    try:
        import matplotlib  # noqa: F401
        from matplotlib import animation
        from matplotlib.figure import Figure
        import mpl_toolkits.mplot3d  # noqa: F401  (registers the 3d projection)
    except ImportError:
        raise UserError(_MISSING) from None
    return Figure, animation


def _display_coords(poses: np.ndarray, world: bool) -> np.ndarray:
    """(T, J, 3) -> plot axes (x, y, z-up). Camera space (x right, y down, z forward) is shown
    as (x, z, -y)."""
    if world:
        return poses
    return np.stack([poses[..., 0], poses[..., 2], -poses[..., 1]], axis=-1)


def render_result(result_path: str | os.PathLike, out_path: str | os.PathLike, *,
                  person: int = 0, fps: float = 25.0, frame: int | None = None) -> str:
    """Render one person of a lift result. out_path: .mp4 / .gif / .png. An .mp4 asked for
    without ffmpeg on PATH is written as .gif beside it. -> the path written."""
    result_path, out_path = os.fspath(result_path), os.fspath(out_path)
    ext = os.path.splitext(out_path)[1].lower()
    if ext not in (".mp4", ".gif", ".png"):
        raise UserError(f"{out_path}: render output must end in .mp4, .gif or .png")
    if not fps or fps <= 0:
        raise UserError(f"--fps must be positive, got {fps}")
    out_dir = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(out_dir):
        raise UserError(f"{out_path}: output directory {out_dir} does not exist")
    Figure, animation = _matplotlib()
    res = load_result(result_path)
    P, T, J, _ = res.poses_3d.shape
    if not 0 <= person < P:
        raise UserError(f"{result_path}: has {P} {'person' if P == 1 else 'people'}; "
                        f"--person must be in 0..{P - 1}")
    try:
        skel = skeleton_for(J)
    except ValueError as e:
        raise UserError(f"{result_path}: {e}") from None
    bones3 = [(j, p) for j, p in enumerate(skel.parents) if p >= 0]
    right3 = frozenset(skel.joints_right)
    J2 = res.keypoints_2d.shape[2]
    if res.metadata.get("engine_input") == "coco" and J2 == 17:
        bones2, right2 = list(_COCO17_BONES), _COCO17_RIGHT
    elif J2 == J:
        bones2, right2 = bones3, right3
    else:
        try:
            s2 = skeleton_for(J2)
        except ValueError:
            bones2, right2 = [], frozenset()
        else:
            bones2 = [(j, p) for j, p in enumerate(s2.parents) if p >= 0]
            right2 = frozenset(s2.joints_right)
    if frame is not None and not 0 <= frame < T:
        raise UserError(f"{result_path}: has {T} frames; --frame must be in 0..{T - 1}")

    world = res.poses_world is not None
    pose3d = _display_coords((res.poses_world if world else res.poses_3d)[person], world)
    size = res.metadata.get("size")
    if size:
        w, h = float(size[0]), float(size[1])
        pose2d = image_coordinates(res.keypoints_2d[person], w, h)
    else:  # normalised coordinates as they are
        pose2d = res.keypoints_2d[person]
        w = h = None
    valid = res.valid[person]

    fig = Figure(figsize=(10, 5), dpi=80)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.06, top=0.9, wspace=0.08)
    ax2 = fig.add_subplot(1, 2, 1)
    ax3 = fig.add_subplot(1, 2, 2, projection="3d")
    ax2.set_title("2D input")
    if w is not None:
        ax2.set_xlim(0, w)
        ax2.set_ylim(h, 0)
    else:
        lo, hi = pose2d.min(axis=(0, 1)), pose2d.max(axis=(0, 1))
        ax2.set_xlim(lo[0], hi[0])
        ax2.set_ylim(hi[1], lo[1])
    ax2.set_aspect("equal")
    centre = pose3d.reshape(-1, 3).mean(axis=0)
    radius = float(np.max(np.abs(pose3d - centre))) or 1.0
    for setter, c in zip((ax3.set_xlim3d, ax3.set_ylim3d, ax3.set_zlim3d), centre):
        setter(c - radius, c + radius)
    try:
        ax3.set_box_aspect((1, 1, 1))
    except AttributeError:  # pragma: no cover - old matplotlib
        pass
    ax3.view_init(elev=15.0, azim=70.0)
    ax3.set_xticklabels([])
    ax3.set_yticklabels([])
    ax3.set_zticklabels([])

    def colour(j: int, right: frozenset) -> str:
        return "red" if j in right else "black"
    lines2 = [ax2.plot([], [], color=colour(j, right2), lw=2)[0] for j, _ in bones2]
    lines3 = [ax3.plot([], [], [], color=colour(j, right3), lw=2)[0] for j, _ in bones3]
    dots = ax2.plot([], [], "o", color="tab:blue", ms=3)[0]
    title = fig.suptitle("")

    def draw(t: int) -> list:
        for (j, p), l2 in zip(bones2, lines2):
            l2.set_data([pose2d[t, j, 0], pose2d[t, p, 0]], [pose2d[t, j, 1], pose2d[t, p, 1]])
        for (j, p), l3 in zip(bones3, lines3):
            l3.set_data([pose3d[t, j, 0], pose3d[t, p, 0]], [pose3d[t, j, 1], pose3d[t, p, 1]])
            l3.set_3d_properties([pose3d[t, j, 2], pose3d[t, p, 2]])
        dots.set_data(pose2d[t, :, 0], pose2d[t, :, 1])
        title.set_text(f"person {person}  frame {t + 1}/{T}" + ("" if valid[t] else
                                                                "  (not detected: filled)"))
        return lines2 + lines3 + [dots, title]

    if ext == ".mp4" and shutil.which("ffmpeg") is None:
        out_path = os.path.splitext(out_path)[0] + ".gif"
        ext = ".gif"
        print(f"gastrt: warning: ffmpeg not found on PATH; writing {out_path} instead",
              file=sys.stderr)

    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=temp_prefix(out_path), suffix=ext)
    os.close(fd)
    try:
        if ext == ".png":
            draw(T // 2 if frame is None else frame)
            fig.savefig(tmp, format="png")
        else:
            anim = animation.FuncAnimation(fig, draw, frames=T, interval=1000.0 / fps,
                                           blit=False, repeat=False)
            writer = (animation.FFMpegWriter(fps=fps, bitrate=3000) if ext == ".mp4"
                      else animation.PillowWriter(fps=fps))
            anim.save(tmp, writer=writer)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, out_path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return out_path


# ---- CLI ------------------------------------------------------------------------------------------
def _cmd_render(args: argparse.Namespace) -> int:
    written = render_result(args.result, args.output, person=args.person, fps=args.fps,
                            frame=args.frame)
    print(f"wrote {written}")
    return 0


def add_parsers(subparsers: Any) -> None:
    """Register ``render`` on an argparse subparsers object (sets ``func(args) -> int``)."""
    r = subparsers.add_parser(
        "render", help="render a `gastrt lift` output as a 3D skeleton animation",
        description="Render 3D poses next to their 2D input: .mp4 (needs ffmpeg; GIF "
                    "otherwise), .gif, or .png (one frame). Needs matplotlib "
                    "(pip install gastrt[render]).")
    r.add_argument("result", help="output of `gastrt lift` (.npz or .json)")
    r.add_argument("-o", "--output", required=True, help="out.mp4, out.gif or out.png")
    r.add_argument("--person", type=int, default=0, help="which person (default 0)")
    r.add_argument("--fps", type=float, default=25.0, help="frames per second (default 25)")
    r.add_argument("--frame", type=int, default=None,
                   help="frame for .png output (default: the middle one)")
    r.set_defaults(func=_cmd_render)
