"""Typed job configs: dataclasses, filled from YAML files in config/ and overridden by CLI flags.

    cfg = load_config(SimConfig, "config/sim.yaml", ["episodes=10", "render.width=128"])

Unknown keys, wrong types and bad override syntax raise ConfigError naming the key.

Why a loader that training uses too lives in etc_ros: etc_ros is not only "the ROS package" but the torch-free
package both sides share (etc_training imports etc_ros, never the reverse; tests/test_layout.py). The robot side
loads its own job configs with this module (teleop.yaml in etc_ros.teleop.config, the bringup and graph configs of
etc_ros.nodes, the safety executor's limits, `etc-robot ros` / `etc-robot calibrate`), and the robot image
(docker/Dockerfile.robot) ships etc_ros without etc_training, so the loader cannot live on the training side. Every
`etc-vla` job (sim, recipe, ETC, distill, midtrain) then loads its YAML through the same code: one override syntax
and one error style on both sides. A third top-level package for these ~190 lines (PyYAML only) would be one more
package for setup.py, package.xml and the robot image to carry, for no gain in dependencies.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml

from etc_ros.core.errors import UserError

T = TypeVar("T")


class ConfigError(UserError, ValueError):
    pass


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Union or (origin is not None and str(origin) == "types.UnionType"):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: {value!r} does not match {tp}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {type(value).__name__}")
        return from_dict(tp, value, prefix=key + ".")
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(a, v, key) for a, v in zip(args, value))
        inner = args[0] if args else Any
        out = [_coerce(inner, v, key) for v in value]
        return tuple(out) if (origin is tuple or tp is tuple) else out
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {k: _coerce(vt, v, f"{key}.{k}") for k, v in value.items()}
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if tp is Path:
        return Path(value)
    return value


def from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or cls.__name__}: expected a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {[prefix + u for u in unknown]} for {cls.__name__}; "
            f"known: {sorted(fields)}"
        )
    kwargs = {k: _coerce(hints[k], v, prefix + k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{cls.__name__}: {e}") from None


def to_dict(cfg: Any) -> dict:
    def conv(v):
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return conv(cfg)


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """Apply `a.b.c=value` overrides (value parsed as YAML) to a nested dict."""
    data = json.loads(json.dumps(data, default=str))
    for ov in overrides or ():
        if "=" not in ov:
            raise ConfigError(f"override {ov!r} must look like key=value (e.g. train.steps=100)")
        key, raw = ov.split("=", 1)
        try:
            val = yaml.safe_load(raw)
        except yaml.YAMLError:
            val = raw
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {ov!r}: {p} is not a section")
        node[parts[-1]] = val
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Defaults of `cls`, then the YAML file (if given), then `key=value` overrides."""
    data = to_dict(cls())
    if path is not None:
        data = merge_dicts(data, read_yaml_mapping(path, ConfigError, what="config file"))
    data = apply_overrides(data, overrides)
    return from_dict(cls, data)


def read_yaml_mapping(path: str | Path, error_cls: type[Exception] = None, what: str = "file",
                      top_level: str = "a mapping") -> dict:
    """A YAML file whose top level is a mapping ({} when empty); a missing file, bad YAML or another top level
    raises error_cls (default ConfigError) naming the file."""
    error_cls = error_cls or ConfigError
    p = Path(path)
    if not p.is_file():
        raise error_cls(f"{what} not found: {p}")
    try:
        loaded = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise error_cls(f"{p}: invalid YAML: {e}") from None
    if not isinstance(loaded, dict):
        raise error_cls(f"{p}: top level must be {top_level}")
    return loaded


def merge_dicts(base: dict, new: dict) -> dict:
    """`base` updated with `new`, nested dicts merged key by key (a new dict; neither argument is modified)."""
    out = dict(base)
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_dicts(out[k], v)
        else:
            out[k] = v
    return out


def save_config(cfg: Any, path: str | Path) -> None:
    from etc_ros.core.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
