"""The teleop recorder (pure: no ROS): its configuration (the `recorder` section of config/teleop.yaml, the
recorder node's parameters), where it finds the cameras' calibrations, and `RecordingSession`, the state machine
that turns the synchronized samples the recorder node feeds it into episodes of the project's dataset through
etc_ros.data.DatasetWriter (atomic commit per episode).

    session = RecordingSession(RecorderConfig(root="runs/teleop/episodes"), camera_models={"primary": cam})
    session.relabel("put the carrot in the pot")
    ok, msg = session.start()                    # free-disk check, refuses with the reason
    session.add_sample({"primary": rgb}, q6, gripper_measured, t_ns, gripper_command)   # at the dataset fps
    ok, msg = session.stop(success=True)         # or session.discard()

Three things "record" on this path; they are kept apart by name:
- `RecordingSession` (here): the operator's session, idle <-> recording, many episodes, one dataset;
- etc_ros.data.EpisodeWriter: the DatasetWriter's handle of the one episode being written (frames, commit);
- `McapLog` (etc_ros.teleop.mcap_log): the optional raw MCAP log of the topics, one file per episode.
The recorder node pairs images with joint states through etc_ros.teleop.stamped_buffer.StampedBuffer.

Per frame: the image(s) resized to the stored size (etc_ros.core.image.resize_image, the model input's
filter), state = 6 joints + gripper opening, ee_pose = FK (xyz + 'sxyz' rpy of ee_gripper_link in base_link),
and the action actually executed between this frame and the next: `etc_ros.core.kinematics.action_between(T_t,
T_t+1)` with the next frame's gripper (the operator's command when known, else the measured opening;
`gripper_action`). A frame is therefore written when the next one arrives; the last frame of an episode gets a
zero-motion action. The episode's camera calibration (intrinsics at the stored size + T_base_cam) goes into its
`cameras` field.

State machine: idle --start--> recording --stop/discard--> idle. The instruction is captured when an episode
starts (its first frame); relabel while recording applies from the next episode (the reply says so).
A crash never loses finished episodes (the writer's commit protocol); the episode in progress is lost.
"""
from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np

from etc_ros.core import spec as robot_spec
from etc_ros.core.camera import CameraModel
from etc_ros.core.errors import CalibrationError, RecorderError, UserError
from etc_ros.core.image import resize_image
from etc_ros.core.instruction import check_instruction
from etc_ros.teleop.mcap_log import McapLog

__all__ = ["RecorderConfig", "RecorderError", "RecordingSession", "calibration_dir", "check_recorder_config",
           "find_camera_models", "free_mb"]


@dataclass
class RecorderConfig:
    root: str = "runs/teleop/episodes"  # dataset directory (created, or appended to with the same spec)
    cameras: list[str] = field(default_factory=lambda: ["primary"])  # topics /camera/<name>/image_raw
    image_height: int = robot_spec.IMAGE_SIZE  # stored image size; 0 (both) = the camera's own size
    image_width: int = robot_spec.IMAGE_SIZE
    fps: float = robot_spec.POLICY_HZ  # frames per second (= the policy rate: one action per frame)
    split: str = "target"  # dataset split of the recorded episodes (Stage 3 reads split 'target')
    instruction: str = ""  # of the next episode; relabel / the node's `instruction` parameter change it
    min_free_mb: float = 1024.0  # refuse to start below this much free disk
    stop_free_mb: float = 256.0  # stop (and keep) the episode when the disk falls below this while recording
    max_frame_age: float = 0.3  # s: a sample whose image or joint state is older is skipped
    max_sync_error: float = 0.05  # s: image vs nearest joint state stamp
    gripper_action: Literal["command", "measured"] = "command"  # action gripper: operator command or measured
    calibration_dir: str = ""  # '' = config/calibration of the package; <camera>.yaml per camera
    require_calibration: bool = False  # refuse to start without a calibration for every camera
    min_frames: int = 2  # shorter episodes are discarded at stop
    max_frames: int = 0  # stop automatically after this many frames (0 = no limit)
    video: bool = False  # store mp4 instead of PNG (lossy)
    mcap: bool = False  # also write a raw MCAP log of the topics per episode (needs mcap + rosbags)
    mcap_dir: str = ""  # '' = <root>_raw
    task: dict[str, str] = field(default_factory=dict)  # metadata.task (family, object, target, goal_text)
    capture_dir: str = "runs/calibration/views"  # calibration views saved by the `capture` shortcut / service


def check_recorder_config(cfg: RecorderConfig) -> RecorderConfig:
    from etc_ros.data.schema import SPLIT_RE

    if not str(cfg.root).strip():
        raise RecorderError("recorder.root must name a dataset directory")
    if not cfg.cameras or any(not isinstance(c, str) or not c.replace("_", "").isalnum() for c in cfg.cameras):
        raise RecorderError(f"recorder.cameras must be a non-empty list of names [A-Za-z0-9_], got {cfg.cameras}")
    if (cfg.image_height == 0) != (cfg.image_width == 0) or cfg.image_height < 0 or cfg.image_width < 0:
        raise RecorderError(f"recorder.image_height/image_width must both be > 0 (stored size) or both 0 (camera "
                            f"size), got {cfg.image_height}x{cfg.image_width}")
    if not (math.isfinite(cfg.fps) and 0 < cfg.fps <= 60):
        raise RecorderError(f"recorder.fps must be in (0, 60], got {cfg.fps}")
    if not SPLIT_RE.match(cfg.split or ""):
        raise RecorderError(f"recorder.split must be a name like 'train' or 'target', got {cfg.split!r}")
    for k in ("min_free_mb", "stop_free_mb", "max_frame_age", "max_sync_error"):
        v = getattr(cfg, k)
        if not (math.isfinite(v) and v >= 0):
            raise RecorderError(f"recorder.{k} must be a number >= 0, got {v}")
    if cfg.gripper_action not in ("command", "measured"):
        raise RecorderError(f"recorder.gripper_action must be 'command' or 'measured', got {cfg.gripper_action!r}")
    if cfg.min_frames < 1 or cfg.max_frames < 0:
        raise RecorderError("recorder.min_frames must be >= 1 and recorder.max_frames >= 0")
    if cfg.instruction:
        res = check_instruction(cfg.instruction)
        if not res.ok:
            raise RecorderError(f"recorder.instruction {res.reason}")
    return cfg


# ----------------------------------------------------------------------------------------- helpers
def free_mb(path: str | Path) -> float:
    """Free disk space [MB] of the file system holding `path` (or its nearest existing parent)."""
    p = Path(path).resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free / 1e6


def calibration_dir(value: str = "") -> Path:
    if value:
        return Path(value)
    from etc_ros.core.paths import share_dir

    return share_dir() / "config" / "calibration"


def find_camera_models(cameras: list[str], directory: str | Path,
                       problems: list[str] | None = None) -> dict[str, CameraModel]:
    """{camera: CameraModel} for the cameras that have <directory>/<camera>.yaml (or .json). An unusable file
    (e.g. intrinsics only) raises CalibrationError, or is reported in `problems` when a list is given. Files are
    read by etc_ros.camera.calibration_files.load_camera_model (the one reader of calibration files)."""
    from etc_ros.camera.calibration_files import load_camera_model

    out: dict[str, CameraModel] = {}
    for cam in cameras:
        for ext in (".yaml", ".yml", ".json"):
            p = Path(directory) / f"{cam}{ext}"
            if p.is_file():
                try:
                    m = load_camera_model(p)
                except CalibrationError as e:
                    if problems is None:
                        raise
                    problems.append(f"{p}: {e}")
                    break
                m.name = cam
                out[cam] = m
                break
    return out


# ----------------------------------------------------------------------------------------- core
@dataclass
class _Frame:
    images: dict[str, np.ndarray]
    state: np.ndarray  # (7,)
    T: np.ndarray  # (4, 4) EE pose
    ee: np.ndarray  # (6,)
    t_ns: int
    gripper_next: float  # gripper value used in the action that LEADS to this frame
    raw_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # camera -> (H, W) as captured


class RecordingSession:
    """The operator's recording session: episode state machine over a DatasetWriter (see the module docstring).
    Not thread-safe: the node locks."""

    def __init__(self, cfg: RecorderConfig | None = None, camera_models: Mapping[str, CameraModel] | None = None,
                 kin: Any = None, metadata: Mapping[str, Any] | None = None):
        self.cfg = check_recorder_config(cfg or RecorderConfig())
        if kin is None:
            from etc_ros.core.kinematics import WidowXKinematics

            kin = WidowXKinematics.from_urdf()
        self.kin = kin
        self.calibration_problems: list[str] = []
        if camera_models is None:
            camera_models = find_camera_models(list(self.cfg.cameras), calibration_dir(self.cfg.calibration_dir),
                                               self.calibration_problems)
        unknown = sorted(set(camera_models) - set(self.cfg.cameras))
        if unknown:
            raise RecorderError(f"calibrations given for cameras {unknown} that are not recorded "
                                f"({list(self.cfg.cameras)})")
        self.camera_models: dict[str, CameraModel] = dict(camera_models)
        self.extra_metadata = dict(metadata or {})
        self.root = Path(self.cfg.root)
        self.instruction = self.cfg.instruction.strip()
        self.writer = None
        self._episode = None  # the writer's EpisodeWriter of the episode in progress (after its first frame)
        self._recording = False
        self._episode_instruction = ""
        self._pending: _Frame | None = None
        self._t0_ns: int | None = None
        self._last_ns: int | None = None
        self._n = 0
        self._mcap: McapLog | None = None
        self.last_message = "idle"
        self.counters = {"episodes_saved": 0, "episodes_discarded": 0, "frames_written": 0, "samples_rejected": 0,
                         "starts_refused": 0}
        self.write_seconds = 0.0  # time spent writing frames (PNG encoding + parquet)
        self.last_saved: int | None = None

    # ---- state
    @property
    def recording(self) -> bool:
        return self._recording

    @property
    def state(self) -> str:
        return "recording" if self._recording else "idle"

    @property
    def frames(self) -> int:
        """Frames of the episode in progress (including the one waiting for its action)."""
        return self._n + (1 if self._pending is not None else 0)

    @property
    def mcap(self) -> McapLog | None:
        return self._mcap

    def status(self) -> dict:
        return {"state": self.state, "instruction": self.instruction, "episode_instruction": self._episode_instruction,
                "frames": self.frames, "root": str(self.root), "last_message": self.last_message,
                "episodes_in_dataset": None if self.writer is None else self.writer.num_episodes,
                "write_fps": round(self.counters["frames_written"] / self.write_seconds, 1)
                if self.write_seconds > 0 else None, **self.counters}

    def _reply(self, ok: bool, msg: str) -> tuple[bool, str]:
        self.last_message = msg
        return ok, msg

    # ---- dataset
    def _stored_size(self, captured: tuple[int, int] | None = None) -> tuple[int, int]:
        """(H, W) stored: the configured size, else the captured one."""
        if self.cfg.image_height > 0:
            return int(self.cfg.image_height), int(self.cfg.image_width)
        if captured is None:
            raise RecorderError("the stored image size is the camera's: it is known at the first frame")
        return int(captured[0]), int(captured[1])

    def _open_writer(self, images: Mapping[str, np.ndarray] | None = None) -> None:
        from etc_ros.data import DatasetSpec, DatasetWriter

        cams = {c: self._stored_size(None if images is None else images[c].shape[:2]) for c in self.cfg.cameras}
        spec = DatasetSpec(fps=self.cfg.fps, cameras=cams, video=self.cfg.video, robot_type=robot_spec.ROBOT_MODEL)
        if self.writer is not None:
            if self.writer.spec.same_as(spec):
                raise RecorderError(f"{self.root}: camera sizes changed: " + "; ".join(self.writer.spec.same_as(spec)))
            return
        self.writer = DatasetWriter.create(self.root, spec)

    def _episode_cameras(self, sizes: Mapping[str, tuple[int, int]]) -> tuple[dict[str, CameraModel] | None, list[str]]:
        """Calibrations scaled to the stored size; cameras without a usable one are reported."""
        out: dict[str, CameraModel] = {}
        problems: list[str] = []
        for cam in self.cfg.cameras:
            m = self.camera_models.get(cam)
            if m is None:
                problems.append(f"camera {cam!r} has no calibration")
                continue
            h_img, w_img = sizes[cam]
            iw, ih = m.intrinsics.width, m.intrinsics.height
            if abs(iw / ih - w_img / h_img) > 0.01 * (w_img / h_img):
                problems.append(f"camera {cam!r}: calibration is for {iw}x{ih} but the camera streams "
                                f"{w_img}x{h_img} (another aspect ratio: recalibrate at this resolution)")
                continue
            h, w = self._stored_size((h_img, w_img))
            r = m.resized(w, h)
            r.name = cam
            out[cam] = r
        return (out or None), problems

    # ---- operations
    def relabel(self, text: Any) -> tuple[bool, str]:
        res = check_instruction(text)
        if not res.ok:
            return self._reply(False, f"instruction {res.reason}")
        self.instruction = res.text
        if self._recording and self._episode is not None:
            return self._reply(True, f"instruction set to {res.text!r}; the episode being recorded keeps "
                                     f"{self._episode_instruction!r} (applies from the next episode)")
        if self._recording:
            self._episode_instruction = res.text
            return self._reply(True, f"instruction set to {res.text!r} (this episode and the next ones)")
        return self._reply(True, f"instruction set to {res.text!r}")

    def start(self, instruction: str | None = None) -> tuple[bool, str]:
        if self._recording:
            return self._reply(False, f"already recording ({self.frames} frames): stop or discard first")
        if instruction is not None:
            ok, msg = self.relabel(instruction)
            if not ok:
                self.counters["starts_refused"] += 1
                return ok, msg
        if not self.instruction:
            self.counters["starts_refused"] += 1
            return self._reply(False, "no instruction: set one first (relabel, the `instruction` parameter or "
                                      "the instruction topic)")
        free = free_mb(self.root)
        if free < self.cfg.min_free_mb:
            self.counters["starts_refused"] += 1
            return self._reply(False, f"refusing to start: only {free:.0f} MB free on the disk of {self.root} "
                                      f"(recorder.min_free_mb = {self.cfg.min_free_mb:.0f})")
        missing = [c for c in self.cfg.cameras if c not in self.camera_models]
        if missing and self.cfg.require_calibration:
            self.counters["starts_refused"] += 1
            extra = f" ({'; '.join(self.calibration_problems)})" if self.calibration_problems else ""
            return self._reply(False, f"refusing to start: no calibration for camera(s) {missing} in "
                                      f"{calibration_dir(self.cfg.calibration_dir)}{extra} "
                                      "(recorder.require_calibration; run `etc-vla calibrate extrinsics`)")
        try:
            if self.cfg.image_height > 0:
                self._open_writer()
        except UserError as e:
            self.counters["starts_refused"] += 1
            return self._reply(False, f"refusing to start: {e}")
        if self.cfg.mcap:
            try:
                n = self.writer.num_episodes if self.writer is not None else 0
                mdir = Path(self.cfg.mcap_dir) if self.cfg.mcap_dir else Path(str(self.root).rstrip("/") + "_raw")
                self._mcap = McapLog(mdir / f"episode_{n:06d}_{time.strftime('%Y%m%d-%H%M%S')}.mcap")
            except (UserError, OSError) as e:
                self.counters["starts_refused"] += 1
                return self._reply(False, f"refusing to start: {e}")
        self._recording = True
        self._episode_instruction = self.instruction
        self._pending = None
        self._episode = None
        self._t0_ns = self._last_ns = None
        self._n = 0
        warn = ""
        if missing:
            warn = f" (warning: no calibration for {missing}: trajectory / affordance ETC will not be possible)"
        return self._reply(True, f"recording: {self.instruction!r}{warn}")

    def add_sample(self, images: Mapping[str, np.ndarray], q: Any, gripper: float, t_ns: int,
                   gripper_command: float | None = None) -> bool:
        """One synchronized sample (images of every camera, 6 joints, measured opening, capture time ns).
        Returns True when it became a frame; False when idle or rejected (counted, reason in last_message)."""
        if not self._recording:
            return False
        try:
            frame = self._make_frame(images, q, gripper, t_ns, gripper_command)
        except (UserError, ValueError, TypeError) as e:
            self.counters["samples_rejected"] += 1
            self.last_message = f"sample rejected: {e}"
            return False
        if frame is None:
            self.counters["samples_rejected"] += 1
            return False
        if self._episode is None:
            try:
                self._begin(frame)
            except UserError as e:
                self._discard_quiet()
                self.counters["starts_refused"] += 1
                self.last_message = f"recording stopped: {e}"
                return False
        if self._pending is not None:
            self._write(self._pending, frame)
        self._pending = frame
        self._last_ns = frame.t_ns
        if self.cfg.max_frames and self.frames >= self.cfg.max_frames:
            self.stop(success=None, reason=f"max_frames {self.cfg.max_frames} reached")
        elif self.frames % 25 == 0 and free_mb(self.root) < self.cfg.stop_free_mb:
            self.stop(success=None, reason=f"disk almost full (< {self.cfg.stop_free_mb:.0f} MB free)")
        return True

    def _make_frame(self, images, q, gripper, t_ns, gripper_command) -> _Frame | None:
        if not isinstance(images, Mapping):
            raise RecorderError("images must be a dict {camera: HxWx3 uint8}")
        missing = [c for c in self.cfg.cameras if c not in images]
        if missing:
            raise RecorderError(f"no image from camera(s) {missing}")
        t_ns = int(t_ns)
        if t_ns <= 0:
            raise RecorderError(f"capture time must be > 0 ns since the epoch, got {t_ns}")
        if self._last_ns is not None and t_ns <= self._last_ns:
            self.last_message = "sample rejected: not newer than the previous frame"
            return None
        imgs = {}
        for c in self.cfg.cameras:
            img = np.asarray(images[c])
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise RecorderError(f"camera {c!r}: expected an HxWx3 uint8 RGB image, got {img.shape} {img.dtype}")
            h, w = self._stored_size(img.shape[:2])
            imgs[c] = resize_image(img, h, w)
        qv = np.asarray(q, dtype=float).reshape(-1)
        if qv.shape != (6,) or not np.all(np.isfinite(qv)):
            raise RecorderError(f"joint state must be 6 finite values, got {q!r}")
        if not math.isfinite(float(gripper)):
            raise RecorderError("gripper opening is not finite")
        g = float(np.clip(float(gripper), 0.0, 1.0))
        T = np.asarray(self.kin.fk(qv), dtype=float)
        from etc_ros.core.transforms3d import pose_to_xyzrpy

        ee = pose_to_xyzrpy(T)
        gn = g
        if self.cfg.gripper_action == "command" and gripper_command is not None and math.isfinite(gripper_command):
            gn = float(np.clip(gripper_command, 0.0, 1.0))
        sizes = {c: tuple(np.asarray(images[c]).shape[:2]) for c in self.cfg.cameras}
        return _Frame(imgs, np.concatenate([qv, [g]]), T, ee, t_ns, gn, sizes)

    def _begin(self, first: _Frame) -> None:
        if self.writer is None:
            self._open_writer(first.images)
        cams, problems = self._episode_cameras(first.raw_sizes)
        if problems and self.cfg.require_calibration:
            raise RecorderError("; ".join(problems))
        meta: dict[str, Any] = {"source": "teleop", "recorder": {"fps": self.cfg.fps,
                                                                 "gripper_action": self.cfg.gripper_action}}
        if problems:
            meta["recorder"]["calibration_problems"] = problems
        if self.cfg.task:
            meta["task"] = dict(self.cfg.task)
        meta.update(self.extra_metadata)
        self._t0_ns = first.t_ns
        self._episode = self.writer.begin_episode(self._episode_instruction, split=self.cfg.split, cameras=cams,
                                              metadata=meta, start_time_ns=first.t_ns)

    def _write(self, f: _Frame, nxt: _Frame | None) -> None:
        from etc_ros.core.kinematics import action_between

        if nxt is None:  # last frame: hold
            action = np.concatenate([np.zeros(6), [f.gripper_next]])
        else:
            action = action_between(f.T, nxt.T, nxt.gripper_next)
        t0 = time.perf_counter()
        self._episode.add_frame(images=f.images, state=f.state, ee_pose=f.ee, action=action,
                            timestamp=(f.t_ns - self._t0_ns) * 1e-9, timestamp_ns=f.t_ns)
        self.write_seconds += time.perf_counter() - t0
        self.counters["frames_written"] += 1
        self._n += 1

    def stop(self, success: bool | None = True, reason: str = "") -> tuple[bool, str]:
        """Finish the episode: written atomically (fsync + rename). Too short -> discarded."""
        if not self._recording:
            return self._reply(False, "not recording")
        n = self.frames
        if n < self.cfg.min_frames:
            self._discard_quiet()
            self.counters["episodes_discarded"] += 1
            return self._reply(False, f"episode discarded: only {n} frame(s) (< recorder.min_frames "
                                      f"{self.cfg.min_frames})")
        if self._pending is not None:
            self._write(self._pending, None)
            self._pending = None
        dur = (self._last_ns - self._t0_ns) * 1e-9 if self._last_ns and self._t0_ns else 0.0
        idx = self._episode.finalize(success)
        self._episode = None
        self._recording = False
        raw = ""
        if self._mcap is not None:
            raw = f"; raw log {self._mcap.close()}"
            self._mcap = None
        self.counters["episodes_saved"] += 1
        self.last_saved = idx
        why = f" ({reason})" if reason else ""
        outcome = {True: "success", False: "failure", None: "outcome unknown"}[success]
        return self._reply(True, f"episode {idx} saved{why}: {n} frames, {dur:.1f} s, {outcome}, "
                                 f"{self._episode_instruction!r}{raw}")

    def _discard_quiet(self) -> None:
        if self._episode is not None:
            self._episode.discard()
        if self._mcap is not None:
            self._mcap.abort()
            self._mcap = None
        self._episode = None
        self._pending = None
        self._recording = False

    def discard(self) -> tuple[bool, str]:
        if not self._recording:
            return self._reply(False, "not recording: nothing to discard")
        n = self.frames
        self._discard_quiet()
        self.counters["episodes_discarded"] += 1
        return self._reply(True, f"episode discarded ({n} frames)")

    def close(self, keep: bool = True) -> str:
        """Shut down: an episode in progress is kept (outcome unknown) when keep, else discarded."""
        msg = ""
        if self._recording:
            msg = self.stop(success=None, reason="recorder shut down")[1] if keep else self.discard()[1]
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        return msg
