"""ETC data engine: embodied trajectory-coupled vision-language supervision built from robot episodes.

    from etc_training.etc import build_etc, validate_etc, write_overlays, EtcConfig, EtcMixture, parse_answer

See docs/etc.md for the record format, the coordinate convention and the CLI (`etc-vla etc ...`).
Heavy modules are imported lazily so `import etc_training.etc` stays cheap.
"""
from __future__ import annotations

from etc_training.etc.config import ALL_SUBTYPES, EtcConfig
from etc_training.etc.coords import EtcParseError, parse_answer
from etc_training.etc.mixture import CATEGORIES, GROUPS, SUBTYPE_CATEGORY, SUBTYPE_GROUP, EtcMixture


def build_etc(episodes_dir, out_dir, cfg=None, **kw) -> dict:
    from etc_training.etc import builder

    return builder.build_etc(episodes_dir, out_dir, cfg, **kw)


def validate_etc(etc_dir, **kw) -> dict:
    from etc_training.etc import validate

    return validate.validate_etc(etc_dir, **kw)


def write_overlays(etc_dir, out_dir, n: int = 12, **kw):
    from etc_training.etc import overlay

    return overlay.write_overlays(etc_dir, out_dir, n, **kw)


def load_samples(etc_dir, splits=None, categories=None) -> list[dict]:
    from etc_training.etc import store

    return store.load_samples(etc_dir, splits, categories)


__all__ = ["build_etc", "validate_etc", "write_overlays", "load_samples", "EtcConfig", "EtcMixture", "parse_answer",
           "EtcParseError", "ALL_SUBTYPES", "CATEGORIES", "GROUPS", "SUBTYPE_CATEGORY", "SUBTYPE_GROUP"]
