"""The one image resize (etc_ros.core.image): a teleop recording, an imported bag and the model input resize the
same camera frame to the same pixels (no train/serve skew from three different filters)."""
from __future__ import annotations

import numpy as np
import pytest

from etc_ros.core import spec as robot_spec
from etc_ros.core.image import resize_image

T0 = 1_700_000_000_000_000_000
STEP_NS = 200_000_000  # 5 Hz


def _frame(h: int = 120, w: int = 160, seed: int = 3) -> np.ndarray:
    """Textured camera frame (noise over gradients): every interpolation filter gives other pixels on it."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) % 256], -1)
    noise = np.random.default_rng(seed).integers(-60, 61, (h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _recorded(tmp_path, frame: np.ndarray, h: int, w: int) -> np.ndarray:
    """The frames a teleop recording stores for `frame` at h x w."""
    from etc_ros.data import DatasetReader
    from etc_ros.teleop.recorder import RecorderConfig, RecordingSession

    root = tmp_path / f"teleop_{h}x{w}"
    core = RecordingSession(RecorderConfig(root=str(root), image_height=h, image_width=w, min_free_mb=1.0,
                                           stop_free_mb=0.0, instruction="pick the cube"), camera_models={})
    assert core.start()[0]
    for k in range(2):
        assert core.add_sample({"primary": frame}, robot_spec.READY_POSE, 1.0, T0 + k * STEP_NS)
    assert core.stop(success=True)[0]
    core.close()
    return DatasetReader(root).load_episode(0).images["primary"]


def _imported(tmp_path, frame: np.ndarray, h: int, w: int) -> np.ndarray:
    """The frames a bag import stores for a bag whose camera streamed `frame`, at image_size (h, w)."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from etc_ros.data import DatasetReader
    from etc_ros.data.bag_import import import_bag

    ts = get_typestore(Stores.ROS2_HUMBLE)
    Image, JointState = ts.types["sensor_msgs/msg/Image"], ts.types["sensor_msgs/msg/JointState"]
    Header, Time = ts.types["std_msgs/msg/Header"], ts.types["builtin_interfaces/msg/Time"]
    names = list(robot_spec.JOINT_NAMES) + [robot_spec.GRIPPER_JOINT]
    bag = tmp_path / f"bag_{h}x{w}"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as wr:
        ci = wr.add_connection("/camera/color/image_raw", Image.__msgtype__, typestore=ts)
        cj = wr.add_connection("/joint_states", JointState.__msgtype__, typestore=ts)
        for k in range(2):
            t = T0 + k * STEP_NS
            hdr = Header(stamp=Time(sec=t // 10**9, nanosec=t % 10**9), frame_id="")
            img = Image(header=hdr, height=frame.shape[0], width=frame.shape[1], encoding="rgb8", is_bigendian=0,
                        step=frame.shape[1] * 3, data=np.ascontiguousarray(frame).reshape(-1))
            wr.write(ci, t, ts.serialize_cdr(img, Image.__msgtype__))
            js = JointState(header=hdr, name=names, position=np.array(list(robot_spec.READY_POSE) + [0.03]),
                            velocity=np.zeros(0), effort=np.zeros(0))
            wr.write(cj, t, ts.serialize_cdr(js, JointState.__msgtype__))
    out = tmp_path / f"bag_ds_{h}x{w}"
    import_bag(bag, out, image_topic="/camera/color/image_raw", joint_state_topic="/joint_states",
               instruction="pick the cube", fps=5.0, image_size=(h, w), progress=False)
    return DatasetReader(out).load_episode(0).images["primary"]


@pytest.fixture(scope="module")
def processor():
    from etc_ros.core.processor import ProcessorConfig, VLAProcessor
    from etc_training.models.text_tokenizer import build_text_tokenizer

    return VLAProcessor(build_text_tokenizer(512, 0, corpus_size=300),
                        ProcessorConfig(image_size=64, image_tokens_per_view=16, use_state=False))


def test_recorder_bag_import_and_processor_resize_to_identical_pixels(tmp_path, processor):
    frame = _frame()
    s = processor.config.image_size
    recorded, imported = _recorded(tmp_path, frame, s, s), _imported(tmp_path, frame, s, s)
    assert recorded.shape == imported.shape == (2, s, s, 3)
    np.testing.assert_array_equal(recorded[0], imported[0])
    np.testing.assert_array_equal(recorded[0], resize_image(frame, s, s))
    # the model input of the live frame (resized by the processor) == that of the stored frames (no resize)
    live = processor.preprocess_images(frame)
    np.testing.assert_array_equal(processor.preprocess_images(recorded[0]), live)
    np.testing.assert_array_equal(processor.preprocess_images(imported[0]), live)


def test_recorder_and_bag_import_agree_on_a_non_square_size(tmp_path):
    frame = _frame(96, 128, seed=5)
    for h, w in ((48, 64), (150, 200)):  # shrink and enlarge
        recorded, imported = _recorded(tmp_path, frame, h, w), _imported(tmp_path, frame, h, w)
        np.testing.assert_array_equal(recorded[0], resize_image(frame, h, w))
        np.testing.assert_array_equal(imported[0], resize_image(frame, h, w))


def test_resize_is_pil_bicubic_whole_image():
    """Bicubic is the filter the shipped policy was trained with: changing it changes every model input."""
    from PIL import Image

    frame = _frame(60, 90)
    out = resize_image(frame, 40, 50)
    assert out.shape == (40, 50, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.asarray(Image.fromarray(frame).resize((50, 40), Image.BICUBIC)))
    assert resize_image(frame, 60, 90) is frame  # already at size: untouched
    const = np.full((30, 40, 3), 77, np.uint8)
    assert np.all(resize_image(const, 17, 23) == 77)  # no ringing on flat regions
