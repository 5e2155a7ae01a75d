"""`etc-vla midtrain report` configuration: config/midtrain.yaml loads, overrides apply, bad values are refused."""
from __future__ import annotations

from pathlib import Path

import pytest

from etc_training.midtrain import MidtrainError
from etc_training.midtrain.config import load_midtrain_config

ROOT = Path(__file__).resolve().parents[1]


def test_config_file_and_validation():
    cfg = load_midtrain_config(str(ROOT / "config" / "midtrain.yaml"), ["pool.n_per_source=7", "train.enabled=true"])
    assert cfg.pool.n_per_source == 7 and cfg.train.enabled and cfg.estimator.select_by == "auc"
    assert cfg.report.methods == ["learned", "random", "distance", "ppl", "delta_ppl"]
    with pytest.raises(MidtrainError, match="unknown method 'oracle'"):
        load_midtrain_config(None, ["report.methods=[learned, oracle]"])
    with pytest.raises(MidtrainError, match="select_by"):
        load_midtrain_config(None, ["estimator.select_by=f1"])
    with pytest.raises(MidtrainError, match="variant"):
        load_midtrain_config(None, ["train.variants=[selected, best]"])
    from etc_ros.core.config import ConfigError

    with pytest.raises(ConfigError, match="unknown config key"):
        load_midtrain_config(None, ["estimator.layers=3"])
