from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from etc_ros.core.config import ConfigError, load_config, save_config, to_dict


@dataclass
class Inner:
    lr: float = 1e-3
    names: tuple[str, ...] = ("a",)


@dataclass
class Job:
    steps: int = 10
    name: str = "x"
    flag: bool = False
    inner: Inner = field(default_factory=Inner)
    weights: dict[str, float] = field(default_factory=lambda: {"a": 1.0})
    out: str | None = None


def test_defaults_yaml_and_overrides(tmp_path: Path):
    p = tmp_path / "job.yaml"
    p.write_text("steps: 20\ninner:\n  lr: 0.5\n")
    cfg = load_config(Job, p, ["inner.names=[b, c]", "flag=true", "weights.b=2", "out=/tmp/x"])
    assert cfg.steps == 20 and cfg.inner.lr == 0.5 and cfg.inner.names == ("b", "c")
    assert cfg.flag is True and cfg.weights == {"a": 1.0, "b": 2.0} and cfg.out == "/tmp/x"
    save_config(cfg, tmp_path / "saved.yaml")
    assert to_dict(load_config(Job, tmp_path / "saved.yaml")) == to_dict(cfg)


def test_unknown_key_is_named(tmp_path: Path):
    p = tmp_path / "job.yaml"
    p.write_text("stepz: 3\n")
    with pytest.raises(ConfigError, match="stepz"):
        load_config(Job, p)


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match="steps"):
        load_config(Job, None, ["steps=abc"])
    with pytest.raises(ConfigError, match="inner.lr"):
        load_config(Job, None, ["inner.lr=[1,2]"])


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config(Job, "/nonexistent/job.yaml")
