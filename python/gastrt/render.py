"""``gastrt render``: a `gastrt lift` output as a 3D skeleton animation next to its 2D input.

Two panels, as VideoPose3D's ``--viz-video`` and MMPose's demo draw them: the 2D keypoints
(on the source video's frames with ``overlay``) and the 3D poses of every selected person, one
colour per person (right limbs a darker shade, left limbs a lighter one), with metric axes, a
ground plane under the lowest joint of the clip and a settable view (elev / azim).

MP4 (ffmpeg from PATH or imageio-ffmpeg; GIF via the pillow writer when neither is there),
GIF, or PNG (one frame). matplotlib and imageio are optional extras
(``pip install 'gastrt[render]'``), imported lazily; pyplot is never imported, so the caller's
backend is left alone.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .engine_file import check_output_path, temp_prefix
from .errors import GastrtError
from .keypoints import UserError, camera_to_world, image_coordinates
from .lifting import LiftResult, ProgressBar, load_result
from .skeletons import COCO_17_BONES, COCO_17_LR, skeleton_for

__all__ = ["render_result", "render_figure", "add_parsers", "DEFAULT_ELEV", "DEFAULT_AZIM"]

# VideoPose3D's render_animation view: elev 15, azim 70 (its --viz-azim default) on world
# poses. Camera-space poses are drawn as (x, z, -y); seen from azim 70 their left and right
# would be swapped against the video, so they get the same angle from the camera's side.
DEFAULT_ELEV = 15.0
DEFAULT_AZIM = {"world": 70.0, "camera": -70.0}

# one colour per person (by result index, so a person keeps it whatever --person selects)
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf",
            "#bcbd22", "#d62728", "#7f7f7f")
_FADED = 0.25          # alpha of a person in frames where they were not detected (filled)
_DPI = 80
_HEIGHT_PX = 480       # figure height; widths follow the video's aspect (multiples of 16 for x264)

_MISSING = ("rendering needs matplotlib, which is not installed: "
            "pip install 'gastrt[render]'")
_MISSING_IMAGEIO = ("--overlay reads the video with imageio and imageio-ffmpeg, which are not "
                    "installed: pip install 'gastrt[render]'")


def _matplotlib() -> Any:
    try:
        import matplotlib  # noqa: F401
        from matplotlib import animation
        from matplotlib.figure import Figure
        import mpl_toolkits.mplot3d  # noqa: F401  (registers the 3d projection)
    except ImportError:
        raise UserError(_MISSING) from None
    return Figure, animation


def _ffmpeg_exe() -> str | None:
    """ffmpeg on PATH, else the binary imageio-ffmpeg ships, else None."""
    exe = shutil.which("ffmpeg")
    if exe:
        return exe
    try:
        import imageio_ffmpeg
        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # not installed, or its binary missing for this platform
        return None


# ---- the video -----------------------------------------------------------------------------------
class _VideoFrames:
    """Frames of a video read in order through imageio-ffmpeg, one at a time (memory stays one
    frame whatever the video's length). ``get(i)`` -> (H, W, 3) uint8 of 0-based frame i; i
    never decreases. size (w, h), fps."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise UserError(f"{self.path}: no such video file")
        try:
            import imageio.v2 as iio
            import imageio_ffmpeg  # noqa: F401  (the FFMPEG plugin needs it)
        except ImportError:
            raise UserError(_MISSING_IMAGEIO) from None
        self._reader = None
        try:
            self._reader = iio.get_reader(self.path, format="FFMPEG")
            meta = self._reader.get_meta_data()
            self.size = (int(meta["size"][0]), int(meta["size"][1]))
        except Exception as e:
            self.close()
            raise UserError(f"{self.path}: not a readable video ({_first_line(e)})") from None
        fps = meta.get("fps")
        self.fps = float(fps) if fps and np.isfinite(fps) and fps > 0 else None
        self._iter = iter(self._reader)
        self._next = 0
        self._frame: np.ndarray | None = None

    def get(self, i: int) -> np.ndarray:
        if i < self._next - 1:
            raise ValueError(f"frames are read in order: {i} after {self._next - 1}")
        while self._next <= i:
            try:
                self._frame = np.asarray(next(self._iter))
            except StopIteration:
                raise UserError(f"{self.path}: the video has {self._next} frames; the result "
                                f"needs frame {i} (0-based): is it the video the keypoints "
                                f"came from?") from None
            except Exception as e:
                raise UserError(f"{self.path}: cannot decode frame {self._next} "
                                f"({_first_line(e)})") from None
            self._next += 1
        return self._frame

    def close(self) -> None:
        try:
            if self._reader is not None:
                self._reader.close()
        except Exception:  # closing a half-open ffmpeg pipe: nothing left to report
            pass


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


# ---- what is drawn -------------------------------------------------------------------------
@dataclass
class _Scene:
    """A lift result ready to draw. people: result person indices drawn; pose3d (N, T, J, 3)
    in the plot's (x, y, z-up) axes; kp2d (N, T, J2, 2) pixels (normalised when size is None);
    valid (N, T); bones as (joint, parent); sides: (left, right) joints; ground: the plane's
    height; labels: the 3D axis labels; size (w, h) of the 2D input; frame_start: video frame
    of result frame 0."""
    people: list[int]
    pose3d: np.ndarray
    kp2d: np.ndarray
    valid: np.ndarray
    bones3: list[tuple[int, int]]
    sides3: tuple[frozenset, frozenset]
    bones2: list[tuple[int, int]]
    sides2: tuple[frozenset, frozenset]
    ground: float
    labels: tuple[str, str, str]
    space: str
    size: tuple[float, float] | None
    frame_start: int

    @property
    def num_frames(self) -> int:
        return self.pose3d.shape[1]


def _people(person: int | Sequence[int] | None, P: int, src: str) -> list[int]:
    if person is None:
        return list(range(P))
    wanted = [person] if isinstance(person, (int, np.integer)) else list(person)
    out: list[int] = []
    for p in wanted:
        if not isinstance(p, (int, np.integer)) or not 0 <= p < P:
            raise UserError(f"{src}: has {P} {'person' if P == 1 else 'people'}; "
                            f"--person must be in 0..{P - 1}, got {p!r}")
        if int(p) not in out:
            out.append(int(p))
    if not out:
        raise UserError("--person selects nobody: give at least one person index")
    return out


def _bones(parents: Sequence[int]) -> list[tuple[int, int]]:
    return [(j, p) for j, p in enumerate(parents) if p >= 0]


def _sides(left: Sequence[int], right: Sequence[int]) -> tuple[frozenset, frozenset]:
    return frozenset(left), frozenset(right)


def _spread_x(cam: np.ndarray, kp2d: np.ndarray, valid: np.ndarray) -> np.ndarray | None:
    """Root-relative poses (Human3.6M models put every person's root at the origin) of
    several people would be drawn on top of each other: shift each along camera x to where
    its 2D centroid is, at its own weak-perspective scale (3D over 2D spread, median over the
    detected frames). cam (N, T, J, 3), kp2d (N, T, J2, 2) normalised -> dx (N, T), or None
    for one person or poses that already carry their position."""
    if cam.shape[0] < 2:
        return None
    centre3 = cam.mean(axis=2)                                            # (N, T, 3)
    spread3 = np.sqrt((((cam - centre3[:, :, None]) ** 2)[..., :2].sum(-1)).mean(-1))
    if np.median(np.linalg.norm(cam[:, :, 0], axis=-1)) > 0.1 * max(np.median(spread3), 1e-9):
        return None
    centre2 = kp2d.mean(axis=2)                                           # (N, T, 2)
    spread2 = np.sqrt(((kp2d - centre2[:, :, None]) ** 2).sum(-1).mean(-1))
    ok = spread2 > 1e-6
    scale = np.ones(cam.shape[0])
    for n in range(cam.shape[0]):
        use = ok[n] & valid[n] if (ok[n] & valid[n]).any() else ok[n]
        if use.any():
            scale[n] = float(np.median(spread3[n, use] / spread2[n, use]))
    return centre2[..., 0] * scale[:, None] - centre3[..., 0]


def _make_scene(res: LiftResult, *, person: int | Sequence[int] | None = None,
               src: str = "result") -> _Scene:
    """LiftResult -> _Scene of the selected people (default: all)."""
    P, T, J, _ = res.poses_3d.shape
    people = _people(person, P, src)
    try:
        skel = skeleton_for(J)
    except ValueError as e:
        raise UserError(f"{src}: {e}") from None
    bones3, sides3 = _bones(skel.parents), _sides(skel.joints_left, skel.joints_right)
    J2 = res.keypoints_2d.shape[2]
    if res.metadata.get("engine_input") == "coco" and J2 == 17:
        bones2, sides2 = list(COCO_17_BONES), _sides(*COCO_17_LR)
    elif J2 == J:
        bones2, sides2 = bones3, sides3
    else:
        try:
            s2 = skeleton_for(J2)
        except ValueError:
            bones2, sides2 = [], _sides((), ())
        else:
            bones2, sides2 = _bones(s2.parents), _sides(s2.joints_left, s2.joints_right)

    cam = res.poses_3d[people].astype(np.float64)
    norm2 = res.keypoints_2d[people]
    valid = np.asarray(res.valid[people], dtype=bool)
    dx = _spread_x(cam, norm2.astype(np.float64), valid)
    units = str(res.metadata.get("units", "m"))
    if res.poses_world is not None:
        pose3d = res.poses_world[people].astype(np.float64)
        if dx is not None:  # the camera-x shift seen in world axes, kept on the ground
            shift = camera_to_world(np.stack([dx, 0 * dx, 0 * dx], axis=-1).astype(np.float32))
            pose3d[..., :2] += shift[:, :, None, :2]
        space, labels = "world", (f"x ({units})", f"y ({units})", f"z, up ({units})")
    else:
        if dx is not None:
            cam[..., 0] += dx[:, :, None]
        # camera space (x right, y down, z forward) shown as (x, z, -y): depth across, -y up
        pose3d = np.stack([cam[..., 0], cam[..., 2], -cam[..., 1]], axis=-1)
        space, labels = "camera", (f"x ({units})", f"z, depth ({units})", f"−y, up ({units})")
    # the ground: the lowest joint of the clip (the feet, for people standing) over the people
    # drawn, detected frames preferred so a filled outlier does not sink it
    up = pose3d[..., 2]
    ground = float(up[valid].min()) if valid.any() else float(up.min())

    size = res.metadata.get("size")
    if size:
        w, h = float(size[0]), float(size[1])
        kp2d = image_coordinates(norm2, w, h)
        wh: tuple[float, float] | None = (w, h)
    else:  # normalised coordinates as they are
        kp2d, wh = np.asarray(norm2, dtype=np.float32), None
    start = int(res.metadata.get("frame_start", 0) or 0)
    return _Scene(people, pose3d, kp2d, valid, bones3, sides3, bones2, sides2, ground, labels,
                 space, wh, start)


def _shades(colour: str) -> tuple[tuple, tuple, tuple]:
    """-> (centre, right = darker, left = lighter) RGB of a person's colour."""
    from matplotlib.colors import to_rgb
    c = np.array(to_rgb(colour))
    return tuple(c), tuple(c * 0.6), tuple(c + (1 - c) * 0.5)


def _box_shrink(image: np.ndarray, k: int) -> np.ndarray:
    """(H, W, C) uint8 -> (H // k, W // k, C): the mean of each k x k block."""
    if k <= 1:
        return image
    h, w = image.shape[0] // k * k, image.shape[1] // k * k
    acc = np.zeros((h // k, w // k) + image.shape[2:], np.uint32)
    for dy in range(k):
        for dx in range(k):
            acc += image[dy:h:k, dx:w:k]
    return (acc // (k * k)).astype(np.uint8)


def _bone_colour(j: int, sides: tuple[frozenset, frozenset], shades: tuple) -> tuple:
    """A bone (j, parent) takes the side of its child joint j."""
    return shades[1] if j in sides[1] else shades[2] if j in sides[0] else shades[0]


class _Panels:
    """The two-panel figure of a _Scene: ``draw(t, image)`` updates it to result frame t
    (image: the video frame (H, W, 3) for the overlay, or None)."""

    def __init__(self, scene: _Scene, *, elev: float, azim: float | None,
                 video_size: tuple[int, int] | None = None):
        Figure, _ = _matplotlib()
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.lines import Line2D
        from matplotlib.ticker import MaxNLocator
        from mpl_toolkits.mplot3d.art3d import Poly3DCollection

        self.scene = s = scene
        kp2d = s.kp2d
        if video_size is not None:
            vw, vh = video_size
            if s.size is not None:  # keypoints of a resized copy of the video: same aspect only
                w, h = s.size
                if abs(vw / vh - w / h) > 0.01 * (w / h):
                    raise UserError(f"the video is {vw}x{vh} but the keypoints were detected "
                                    f"on {w:g}x{h:g} frames (another aspect ratio): is it the "
                                    f"video the keypoints came from?")
                # pixel centres on integers (as drawn): pixel i's centre goes to (i + .5) s - .5
                scale = np.array([vw / w, vh / h], dtype=np.float32)
                kp2d = (kp2d + 0.5) * scale - 0.5
            else:  # no size recorded: the normalisation was to the video's own size
                kp2d = image_coordinates(s.kp2d, vw, vh)
            extent: tuple[float, float] | None = (float(vw), float(vh))
        else:
            extent = s.size
        self.kp2d = kp2d
        aspect = min(max(extent[0] / extent[1], 0.5), 2.5) if extent else 1.0
        # pixel layout: [left | 2D panel | pad | 3D panel], 2D panel at the input's aspect;
        # without the video the 2D panel keeps its pixel axes, which need margins
        top, pad, w3 = 34, 8, 520
        left, bottom = (pad, pad) if video_size is not None else (46, 26)
        h2 = _HEIGHT_PX - top - bottom
        w2 = int(round(h2 * aspect))
        width = -(-(left + w2 + pad + w3) // 16) * 16
        fig = Figure(figsize=(width / _DPI, _HEIGHT_PX / _DPI), dpi=_DPI)
        FigureCanvasAgg(fig)
        self.fig = fig
        W, H = float(width), float(_HEIGHT_PX)
        ax2 = fig.add_axes((left / W, bottom / H, w2 / W, h2 / H))
        ax3 = fig.add_axes(((left + w2 + pad) / W, 0.03, (width - left - w2 - pad) / W,
                            (H - top) / H), projection="3d")
        self.ax2, self.ax3 = ax2, ax3

        # 2D panel: pixel centres on integers, as imshow and the keypoint detectors have them
        self.image, self.shrink = None, 1
        if video_size is not None:
            vw, vh = video_size
            # matplotlib's resampling of a full-HD frame costs more than the whole 3D panel:
            # box-average it first by k, to between one and two times the panel's pixels
            self.shrink = k = max(1, min(vw // w2, vh // h2))
            self.image = ax2.imshow(np.zeros((vh // k, vw // k, 3), np.uint8), zorder=0,
                                    extent=(-0.5, vw // k * k - 0.5, vh // k * k - 0.5, -0.5))
            ax2.set_axis_off()
        else:
            ax2.tick_params(labelsize=8)
        if extent is not None:
            ax2.set_xlim(-0.5, extent[0] - 0.5)
            ax2.set_ylim(extent[1] - 0.5, -0.5)
        else:
            pts = kp2d.reshape(-1, 2)
            lo, hi = pts.min(axis=0), pts.max(axis=0)
            ax2.set_xlim(lo[0], hi[0])
            ax2.set_ylim(hi[1], lo[1])
        ax2.set_aspect("equal")

        # 3D panel: equal metres on every axis, bottom at the ground plane, fixed over the clip
        pts = s.pose3d.reshape(-1, 3)
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        cx, cy = (lo[:2] + hi[:2]) / 2
        tall = (float(hi[2]) - s.ground) * 1.08
        half = max(float(np.max(hi[:2] - lo[:2])) * 1.08, tall) / 2 or 1.0
        tall = max(tall, half)  # people spread wide: a flatter box, never a slab
        ax3.set_xlim3d(cx - half, cx + half)
        ax3.set_ylim3d(cy - half, cy + half)
        ax3.set_zlim3d(s.ground, s.ground + tall)
        ax3.set_box_aspect((2 * half, 2 * half, tall))  # one metre is as long on every axis
        ax3.view_init(elev=elev, azim=DEFAULT_AZIM[s.space] if azim is None else azim)
        ax3.computed_zorder = False  # ground first, skeletons over it: no depth-sort flicker
        for axis, label in zip((ax3.xaxis, ax3.yaxis, ax3.zaxis), s.labels):
            axis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
            axis.set_label_text(label, fontsize=9)
            axis.labelpad = 2
        ax3.tick_params(labelsize=8, pad=0)
        xs = ax3.xaxis.get_major_locator().tick_values(cx - half, cx + half)
        ys = ax3.yaxis.get_major_locator().tick_values(cy - half, cy + half)
        xs = xs[(xs >= cx - half) & (xs <= cx + half)]
        ys = ys[(ys >= cy - half) & (ys <= cy + half)]
        g = s.ground
        corners = [(cx - half, cy - half, g), (cx + half, cy - half, g),
                   (cx + half, cy + half, g), (cx - half, cy + half, g)]
        plane = Poly3DCollection([corners], facecolor=(0.55, 0.6, 0.5, 0.25),
                                 edgecolor=(0.4, 0.45, 0.4, 0.6), zorder=0)
        plane.set_gid("ground")
        ax3.add_collection3d(plane)
        for x in xs:
            ax3.plot([x, x], [cy - half, cy + half], [g, g], color="0.6", lw=0.6, zorder=0.5)
        for y in ys:
            ax3.plot([cx - half, cx + half], [y, y], [g, g], color="0.6", lw=0.6, zorder=0.5)

        # one set of artists per person
        self.lines3: list[list] = []
        self.lines2: list[list] = []
        self.dots: list = []
        handles = []
        for p in s.people:
            colour = _PALETTE[p % len(_PALETTE)]
            shades = _shades(colour)
            self.lines3.append([ax3.plot([], [], [], lw=2.2, zorder=2,
                                         color=_bone_colour(j, s.sides3, shades))[0]
                                for j, _ in s.bones3])
            self.lines2.append([ax2.plot([], [], lw=1.8, zorder=2, solid_capstyle="round",
                                         color=_bone_colour(j, s.sides2, shades))[0]
                                for j, _ in s.bones2])
            self.dots.append(ax2.plot([], [], "o", ms=3, zorder=3, color=shades[1],
                                      markeredgecolor="white", markeredgewidth=0.5)[0])
            handles.append(Line2D([], [], color=colour, lw=3, label=f"person {p}"))
        self.legend = ax3.legend(handles=handles, loc="upper left", fontsize=8,
                                 frameon=False, handlelength=1.5, title=f"3D, {s.space} space",
                                 title_fontsize=10,
                                 bbox_to_anchor=(0.0, 1.05))
        self.title = ax2.set_title("", fontsize=10)

    def draw(self, t: int, image: np.ndarray | None = None) -> None:
        s = self.scene
        if self.image is not None and image is not None:
            self.image.set_data(_box_shrink(image, self.shrink))
        for n, p in enumerate(s.people):
            alpha = 1.0 if s.valid[n, t] else _FADED
            pose, kp = s.pose3d[n, t], self.kp2d[n, t]
            for (j, q), line in zip(s.bones3, self.lines3[n]):
                line.set_data_3d([pose[j, 0], pose[q, 0]], [pose[j, 1], pose[q, 1]],
                                 [pose[j, 2], pose[q, 2]])
                line.set_alpha(alpha)
            for (j, q), line in zip(s.bones2, self.lines2[n]):
                line.set_data([kp[j, 0], kp[q, 0]], [kp[j, 1], kp[q, 1]])
                line.set_alpha(alpha)
            self.dots[n].set_data(kp[:, 0], kp[:, 1])
            self.dots[n].set_alpha(alpha)
            self.legend.get_texts()[n].set_text(
                f"person {p}" + ("" if s.valid[n, t] else " (not detected: filled)"))
        what = f"video frame {s.frame_start + t}" if self.image is not None else "2D input"
        self.title.set_text(f"{what}   (frame {t + 1}/{s.num_frames})")


def render_figure(result: LiftResult | str | os.PathLike, *, person: int | Sequence[int] | None
                  = None, frame: int = 0, elev: float = DEFAULT_ELEV,
                  azim: float | None = None, overlay: str | os.PathLike | None = None) -> Any:
    """The matplotlib Figure of one frame (result frame ``frame``, 0-based): 2D panel
    (fig.axes[0], on the video frame with ``overlay``) and 3D panel (fig.axes[1]). azim:
    default DEFAULT_AZIM of the space drawn (world when the result has poses_world). An Agg
    canvas is attached, so ``fig.canvas.draw()`` works without pyplot."""
    src = os.fspath(result) if isinstance(result, (str, os.PathLike)) else "result"
    res = load_result(result) if isinstance(result, (str, os.PathLike)) else result
    scene = _make_scene(res, person=person, src=src)
    _check_frame(frame, scene.num_frames, src)
    video = _VideoFrames(overlay) if overlay is not None else None
    try:
        panels = _Panels(scene, elev=elev, azim=azim, video_size=video and video.size)
        panels.draw(frame, video.get(scene.frame_start + frame) if video else None)
    finally:
        if video:
            video.close()
    return panels.fig


def _check_frame(frame: int, T: int, src: str) -> None:
    if not 0 <= frame < T:
        raise UserError(f"{src}: has {T} frames; --frame must be in 0..{T - 1}")


# ---- writing -----------------------------------------------------------------------------------
def render_result(result_path: str | os.PathLike, out_path: str | os.PathLike, *,
                  person: int | Sequence[int] | None = None, fps: float | None = None,
                  frame: int | None = None, elev: float = DEFAULT_ELEV,
                  azim: float | None = None, overlay: str | os.PathLike | None = None,
                  progress: Callable[[str, int, int], None] | None = None) -> str:
    """Render a lift result. out_path: .mp4 / .gif / .png (one frame: ``frame``, default the
    middle one). person: an index or a list (default: everyone). fps: default the overlay
    video's, else 25. overlay: the source video; result frame t is drawn on its frame
    ``metadata['frame_start'] + t``. progress(stage, done, total) per frame. An .mp4 asked for
    without any ffmpeg is written as .gif beside it. -> the path written."""
    result_path, out_path = os.fspath(result_path), os.fspath(out_path)
    ext = os.path.splitext(out_path)[1].lower()
    if ext not in (".mp4", ".gif", ".png"):
        raise UserError(f"{out_path}: render output must end in .mp4, .gif or .png")
    if fps is not None and not fps > 0:
        raise UserError(f"--fps must be positive, got {fps}")
    out_dir = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(out_dir):
        raise UserError(f"{out_path}: output directory {out_dir} does not exist")
    inputs = [os.fspath(p) for p in (result_path, overlay) if p is not None]
    check_output_path(out_path, inputs)  # before the work
    _, animation = _matplotlib()
    res = load_result(result_path)
    scene = _make_scene(res, person=person, src=result_path)
    T = scene.num_frames
    if frame is not None:
        _check_frame(frame, T, result_path)

    ffmpeg = _ffmpeg_exe() if ext == ".mp4" else None
    if ext == ".mp4" and ffmpeg is None:
        out_path = os.path.splitext(out_path)[0] + ".gif"
        ext = ".gif"
        print(f"gastrt: warning: ffmpeg not found (PATH or imageio-ffmpeg); writing {out_path} "
              f"instead", file=sys.stderr)
        check_output_path(out_path, inputs)  # the .gif beside it may be an input too

    video = _VideoFrames(overlay) if overlay is not None else None
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=temp_prefix(out_path), suffix=ext)
    os.close(fd)
    try:
        panels = _Panels(scene, elev=elev, azim=azim, video_size=video and video.size)
        fig = panels.fig
        start = scene.frame_start
        if ext == ".png":
            t = T // 2 if frame is None else frame
            panels.draw(t, video.get(start + t) if video else None)
            fig.savefig(tmp, format="png", dpi=_DPI)
        else:
            rate = fps or (video.fps if video and video.fps else 25.0)
            if ext == ".mp4":
                import matplotlib
                writer = animation.FFMpegWriter(fps=rate, bitrate=3000)
                rc = matplotlib.rc_context({"animation.ffmpeg_path": ffmpeg})
            else:
                import contextlib
                writer, rc = animation.PillowWriter(fps=rate), contextlib.nullcontext()
            with rc, writer.saving(fig, tmp, dpi=_DPI):
                for t in range(T):
                    panels.draw(t, video.get(start + t) if video else None)
                    writer.grab_frame()
                    if progress:
                        progress("render", t + 1, T)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, out_path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):  # like atomic_write: one GastrtError naming the output
            raise GastrtError(f"{out_path}: cannot write ({e.strerror or e})") from None
        raise
    finally:
        if video:
            video.close()
    return out_path


# ---- CLI ------------------------------------------------------------------------------------------
def _person_list(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a person index or a comma list like 0,2, got {text!r}") from None
    if not out:
        raise argparse.ArgumentTypeError(f"expected a person index, got {text!r}")
    return out


def _cmd_render(args: argparse.Namespace) -> int:
    person = None if args.person is None else [p for group in args.person for p in group]
    bar = ProgressBar(min_total=2)
    try:
        written = render_result(args.result, args.output, person=person, fps=args.fps,
                                frame=args.frame, elev=args.elev, azim=args.azim,
                                overlay=args.overlay, progress=bar)
    finally:
        bar.close()
    print(f"wrote {written}")
    return 0


def add_parsers(subparsers: Any) -> None:
    """Register ``render`` on an argparse subparsers object (sets ``func(args) -> int``)."""
    r = subparsers.add_parser(
        "render", help="render a `gastrt lift` output as a 3D skeleton animation",
        description="Render 3D poses next to their 2D input (or the source video with "
                    "--overlay): .mp4 (ffmpeg from PATH or imageio-ffmpeg; GIF otherwise), "
                    ".gif, or .png (one frame). One colour per person, right limbs darker, "
                    "left limbs lighter; frames where a person was not detected (filled by "
                    "interpolation) are drawn faded. Axes in the poses' units (metadata "
                    "'units', metres by default) over a ground plane at the clip's lowest "
                    "joint. Needs matplotlib; --overlay also imageio and imageio-ffmpeg "
                    "(pip install 'gastrt[render]').")
    r.add_argument("result", help="output of `gastrt lift` (.npz or .json)")
    r.add_argument("-o", "--output", required=True, help="out.mp4, out.gif or out.png")
    r.add_argument("--person", type=_person_list, action="append", metavar="N[,N...]",
                   help="people to draw, repeatable or a comma list (default: all)")
    r.add_argument("--overlay", metavar="VIDEO",
                   help="draw the 2D keypoints on this video's frames (the video the keypoints "
                        "were detected on; result frame t is drawn on video frame t, 0-based)")
    r.add_argument("--elev", type=float, default=DEFAULT_ELEV,
                   help=f"3D view elevation in degrees (default {DEFAULT_ELEV:g})")
    r.add_argument("--azim", type=float, default=None,
                   help=f"3D view azimuth in degrees (default {DEFAULT_AZIM['world']:g} "
                        f"for world poses as VideoPose3D, {DEFAULT_AZIM['camera']:g} for "
                        f"camera space: the same angle from the camera's side, so left and "
                        f"right match the video)")
    r.add_argument("--fps", type=float, default=None,
                   help="frames per second (default: the --overlay video's, else 25)")
    r.add_argument("--frame", type=int, default=None,
                   help="frame for .png output, 0-based (default: the middle one)")
    r.set_defaults(func=_cmd_render)
