"""The frame cache: frames decoded once at the model resolution with the processor's own resize, grounding points
from the annotations and the EE pose, rebuilt when the dataset changes, and the training data reading from it."""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from etc_ros.core.image import resize_image  # noqa: E402


@pytest.fixture(scope="module")
def sim_dataset(tmp_path_factory):
    from etc_training.sim import SimConfig
    from etc_training.sim.collect import collect

    root = tmp_path_factory.mktemp("fc") / "ds"
    cfg = SimConfig()
    cfg.episodes, cfg.families = 2, ["pick_up"]
    cfg.render.width = cfg.render.height = 80
    collect(cfg, root, progress=False)
    return root


def test_cache_matches_the_processor_resize_and_the_annotations(sim_dataset):
    from etc_ros.data import DatasetReader
    from etc_training.recipe.frame_cache import FrameCache, cache_dir_for, grounding_points

    r = DatasetReader(sim_dataset)
    fc = FrameCache.open(sim_dataset, "primary", 48, progress=False)
    assert fc.directory == cache_dir_for(sim_dataset) and not str(fc.directory).startswith(str(sim_dataset) + "/")
    for e in r.episodes():
        ep = r.load_episode(e)
        for t in (0, len(ep.action) - 1):
            np.testing.assert_array_equal(fc.frame(e, t), resize_image(ep.images["primary"][t], 48, 48))
            g = fc.points(e, t)
            np.testing.assert_allclose(g[:4], grounding_points(ep.objects[t], "primary", 80, 80)[:4], equal_nan=True)
            assert np.all(np.isfinite(g[:2])) and np.all(np.abs(g[:2]) <= 1.0)  # the object is in view
            assert np.all(np.isnan(g[2:4]))  # pick_up has no place target
            uv, _ = ep.cameras["primary"].project(np.asarray(ep.ee_pose)[t:t + 1, :3])
            np.testing.assert_allclose(g[4:6], 2 * (uv[0] + 0.5) / 80 - 1, atol=1e-5)  # the gripper
    with pytest.raises(Exception, match="no episode"):
        fc.frame(99, 0)


def test_cache_is_reused_and_rebuilt_when_the_dataset_changes(sim_dataset):
    from etc_training.recipe.frame_cache import FrameCache

    a = FrameCache.open(sim_dataset, "primary", 32, progress=False)
    stamp = (a.directory / "frames_primary_32.u8").stat().st_mtime_ns
    b = FrameCache.open(sim_dataset, "primary", 32, progress=False)
    assert (b.directory / "frames_primary_32.u8").stat().st_mtime_ns == stamp  # reused
    idx = a.directory / "index_primary_32.json"
    idx.write_text(idx.read_text().replace('"fingerprint": "', '"fingerprint": "stale'))
    FrameCache.open(sim_dataset, "primary", 32, progress=False)
    assert (a.directory / "frames_primary_32.u8").stat().st_mtime_ns != stamp  # rebuilt
    with pytest.raises(Exception, match="no camera"):
        FrameCache.open(sim_dataset, "wrist", 32, progress=False)


def test_training_examples_come_from_the_cache_with_shift_augmentation(sim_dataset):
    from etc_training.models.presets import get_preset
    from etc_training.models.vla import VLAPolicy
    from etc_training.recipe.data import ActionChunkDataset, EpisodeStore, StageData
    from etc_training.recipe.frame_cache import random_shift

    pol = VLAPolicy.build(get_preset("tiny-conv", image_size=32, patch_size=16), head="regression",
                          head_config={"grounding_weight": 0.5}, states=np.zeros((4, 7)))
    store = EpisodeStore(0, frame_size=32)
    ds = ActionChunkDataset(store, sim_dataset, ["train"], 10, ["primary"])
    it = ds.item(0)
    assert it["images"].shape == (32, 32, 3) and it["grounding"].shape == (6,)
    rng = np.random.default_rng(0)
    img = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)
    shifted, dx, dy = random_shift(img, 4, rng)
    assert shifted.shape == img.shape and abs(dx) <= 4 and abs(dy) <= 4
    if dx >= 0 and dy >= 0:
        np.testing.assert_array_equal(shifted[dy:, dx:], img[:32 - dy, :32 - dx])
    data = StageData(pol.processor, ds, [], action_batch=4, etc_batch=0, seed=0, augment_shift=3)
    b = data.next()["action"]
    assert b["grounding"].shape == (4, 6) and b["state"].shape == (4, 7) and b["pixel_values"].shape[-1] == 32
    state = data.state_dict()
    b1 = data.next()["action"]
    data.load_state_dict(state)  # the augmentation continues exactly after a resume
    np.testing.assert_array_equal(data.next()["action"]["pixel_values"], b1["pixel_values"])
    out = pol(b)
    assert float(out["loss"].detach()) > 0 and "grounding_loss" in out


def test_grounding_questions_name_any_object_of_the_scene(sim_dataset):
    from etc_ros.data import DatasetReader
    from etc_training.models.presets import get_preset
    from etc_training.models.vla import VLAPolicy
    from etc_training.recipe.data import GROUNDING_TEMPLATES, ActionChunkDataset, EpisodeStore, StageData
    from etc_training.recipe.frame_cache import FrameCache

    r = DatasetReader(sim_dataset)
    fc = FrameCache.open(sim_dataset, "primary", 32, progress=False)
    e = r.episodes()[0]
    ep = r.load_episode(e, images=False)
    objs = fc.scene_objects(e, 0)
    names = [o["name"] for o in ep.objects[0]]
    assert {n for n, _ in objs} <= set(names) and len(objs) >= 2  # the target and at least one distractor
    for n, pt in objs:
        o = ep.objects[0][names.index(n)]
        np.testing.assert_allclose(pt, 2 * (np.asarray(o["cameras"]["primary"]["point"]) + 0.5) / 80 - 1, atol=1e-5)
    pol = VLAPolicy.build(get_preset("tiny-conv", image_size=32, patch_size=16), head="regression",
                          head_config={"grounding_weight": 1.0, "ground_to_action": True}, states=np.zeros((4, 7)))
    ds = ActionChunkDataset(EpisodeStore(0, frame_size=32), sim_dataset, ["train"], 10, ["primary"])
    rng = np.random.default_rng(0)
    asked = set()
    for i in range(20):
        q = ds.grounding_query(pol.processor, i % len(ds), rng, shift=0)
        assert q["kind"] == "grounding" and np.all(np.isfinite(q["grounding"][:2]))
        assert np.all(np.isnan(q["grounding"][2:]))
        asked.add(pol.processor.decode_text(q["input_ids"].tolist()))
    assert any(t.split("{")[0].strip() in a for a in asked for t in GROUNDING_TEMPLATES)
    data = StageData(pol.processor, ds, [], action_batch=2, etc_batch=0, seed=0, grounding_batch=3)
    b = data.next()
    assert b["grounding"]["kind"] == "grounding" and b["grounding"]["grounding"].shape == (3, 6)
    out = pol(b["grounding"])
    assert set(out) == {"loss", "grounding_query_loss"} and float(out["loss"].detach()) > 0
    out["loss"].backward()
    assert pol.action_head.grounding.weight.grad is not None
