"""Frozen-VLM features with the tiny random-init model: pooling definition, memmap cache resume after an interrupt
(bit-identical), cache validation, answer NLL, and the `etc-vla midtrain` command line end to end on a few samples."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from etc_training.midtrain import MidtrainError
from etc_training.midtrain.builtin_pool import make_builtin_pool
from etc_training.midtrain.features import (
    FEATURES_FILE,
    NLL_FILE,
    FeatureCache,
    extract_features,
    load_model,
    pool_hidden,
)
from etc_training.midtrain.pool import pool_items, read_pool

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model():
    return load_model(None, "tiny", seed=0)


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return read_pool(make_builtin_pool(tmp_path_factory.mktemp("pool"), n_per_source=2, seed=0, progress=False))


def test_pooling_is_masked_mean_of_image_and_text_tokens(model, pool):
    """phi = [mean over image tokens ; mean over text tokens], padding excluded: a padded row in a batch gives
    the features of the same sample run alone."""
    from etc_training.midtrain.features import _images_for
    from etc_training.recipe.data import EpisodeStore, RecordImages

    items = pool_items(pool)
    res = RecordImages(EpisodeStore(), (), 1)
    proc = model.processor
    exs = [proc.build_etc_example(it["prompt"], it["answer"], _images_for(it, res, 1)) for it in items[:3]]
    with torch.no_grad():
        b = model.to_torch(proc.collate(exs))
        out = model.run_backbone(b)
        f = pool_hidden(out.hidden_states, b["input_ids"], b["attention_mask"], proc.image_id)
        n_img = proc.config.image_tokens_per_view
        for k, ex in enumerate(exs):
            one = model.to_torch(proc.collate([ex]))
            h = model.run_backbone(one).hidden_states[0]
            want = torch.cat([h[:n_img].mean(0), h[n_img:].mean(0)])
            torch.testing.assert_close(f[k], want, rtol=1e-4, atol=1e-4)
    assert f.shape == (3, 2 * model.backbone.config.text_config.hidden_size)
    assert int((b["attention_mask"] == 0).sum()) > 0  # the batch really was padded


def test_cache_resume_is_bit_identical(model, pool, tmp_path):
    items = pool_items(pool)  # 12 items, batch 4 -> 3 batches
    full = extract_features(model, items, tmp_path / "full", batch_size=4, progress=False)
    assert full.complete and full.n == 12 and full.ids == [it["id"] for it in items]
    part = extract_features(model, items, tmp_path / "part", batch_size=4, max_batches=1, progress=False)
    assert not part.complete
    assert json.loads((tmp_path / "part" / "progress.json").read_text())["rows_done"] == 4
    with pytest.raises(MidtrainError, match="unfinished .4/12 rows"):
        part.require_complete()
    # what a kill mid-batch leaves: garbage after the committed rows
    mm = np.memmap(tmp_path / "part" / FEATURES_FILE, dtype=np.float32, mode="r+", shape=(12, full.dim))
    mm[4:6] = 123.0
    mm.flush()
    del mm
    # a resume keeps the interrupted run's batch size whatever is asked now
    done = extract_features(model, items, tmp_path / "part", batch_size=5, progress=False)
    assert done.complete and done.index["batch_size"] == 4
    assert (tmp_path / "part" / FEATURES_FILE).read_bytes() == (tmp_path / "full" / FEATURES_FILE).read_bytes()
    assert (tmp_path / "part" / NLL_FILE).read_bytes() == (tmp_path / "full" / NLL_FILE).read_bytes()
    # answer NLL: positive, about log(vocab) for a random model, counted over the answer tokens only
    s, n = done.nll()
    assert np.all(n >= 2) and np.all(s > 0)
    assert abs(float(done.mean_nll().mean()) - np.log(model.processor.vocab_size)) < 1.0
    groups = done.group_rows()
    assert sorted(groups) == pool.sources() and all(len(v) == 2 for v in groups.values())


def test_cache_of_other_items_is_refused(model, pool, tmp_path):
    items = pool_items(pool)[:3]
    extract_features(model, items, tmp_path / "c", batch_size=2, progress=False)
    with pytest.raises(MidtrainError, match="items_digest"):
        extract_features(model, pool_items(pool)[3:6], tmp_path / "c", batch_size=2, progress=False)
    c = extract_features(model, pool_items(pool)[3:6], tmp_path / "c", batch_size=2, progress=False, overwrite=True)
    assert c.ids == [it["id"] for it in pool_items(pool)[3:6]]
    with pytest.raises(MidtrainError, match="not a feature cache"):
        FeatureCache(tmp_path)
    (tmp_path / "c" / FEATURES_FILE).write_bytes(b"\0" * 12)
    with pytest.raises(MidtrainError, match="expected"):
        FeatureCache(tmp_path / "c")


def test_cli_end_to_end(pool, tmp_path, capsys):
    """pool builtin -> features (interrupted, resumed) -> fit -> select (learned, random) -> gap."""
    from etc_training.cli import main

    p = tmp_path / "pool"
    assert main(["midtrain", "pool", "builtin", "--out", str(p), "--n-per-source", "3", "--no-progress"]) == 0
    # robot stand-in: the tabletop samples rewritten as prompt/answer records (JSONL)
    recs = [r for r in read_pool(p).records if r["source"].startswith("tabletop")]
    robot = tmp_path / "robot.jsonl"
    robot.write_text("".join(json.dumps({"id": "r" + r["id"], "prompt": r["conversations"][0]["value"][8:],
                                         "answer": r["conversations"][1]["value"], "category": "spatial",
                                         "images": [{"path": str((p / r["image"]).resolve())}]}) + "\n"
                             for r in recs))
    f = tmp_path / "feats"
    common = ["midtrain", "features", "--pool", str(p), "--robot", str(robot), "--out", str(f), "--batch-size", "4",
              "--threads", "1", "--no-progress"]
    assert main(common + ["--max-batches", "1"]) == 3  # incomplete
    assert main(common) == 0
    capsys.readouterr()
    assert main(["midtrain", "fit", "--features", str(f), "--out", str(tmp_path / "est"), "--epochs", "3",
                 "--hidden", "16", "--no-progress"]) == 0
    fit = json.loads(capsys.readouterr().out)
    assert 0.0 <= fit["val_auc"] <= 1.0 and (tmp_path / "est" / "scores.png").is_file()
    for m in ("learned", "random", "distance"):
        sel = tmp_path / f"{m}.jsonl"
        assert main(["midtrain", "select", "--pool", str(p), "--features", str(f), "--out", str(sel), "--method", m,
                     "--estimator", str(tmp_path / "est"), "--k", "5"]) == 0
        assert len(sel.read_text().splitlines()) == 5
    assert main(["midtrain", "select", "--pool", str(p), "--features", str(f), "--out", str(tmp_path / "x.jsonl"),
                 "--method", "ppl"]) == 2  # needs --adapted-features: one-line error, exit 2
    assert "--adapted-features" in capsys.readouterr().err
    assert main(["midtrain", "gap", "--features", str(f), "--out", str(tmp_path / "gap"), "--embedding", "pca",
                 "--max-per-set", "10"]) == 0
    assert (tmp_path / "gap" / "mmd_heatmap.png").is_file() and (tmp_path / "gap" / "embedding.png").is_file()
    names = json.loads((tmp_path / "gap" / "mmd.json").read_text())["names"]
    assert "robot/spatial" in names and "doc_text" in names
