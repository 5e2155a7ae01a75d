"""Policy bundles: the self-describing directory `etc-vla export` writes and `PolicyRuntime` loads (robot side:
json + hashlib + numpy + the shared processor; no torch, no onnx).

Layout (bundle format version 1):

    BUNDLE/
      manifest.json          format, version, producer versions, source checkpoint hash, head, graph I/O,
                             variants (graph files per precision), sha256 + size of EVERY other file
      spec.json              observation / action spec: cameras, model image size, state layout, control rate,
                             chunk horizon, action space
      processor/             processor.json, tokenizer.json, action_tokenizer.json, norm_stats.json
                             (VLAProcessor.save: the one preprocessing path shared with training)
      fp32/                  vision.onnx, embed.onnx, prefill.onnx, decode.onnx   (token head)
      int8-dynamic/ int8-static/ fp16/     the same graphs, quantized / converted (optional)
      torch/                 the source checkpoint (optional; backend="torch")
      model_card.md, model_card.json       parity figures, export settings, checkpoint hash

Graph roles: "vision" (pixel_values -> image_embeds), "embed" (input_ids -> embeds), "prefill" (the language
model over inputs_embeds -> last logits, hidden states, KV cache), "decode" (one token + KV cache -> logits, KV
cache), and the slot "head" for a single-pass continuous action head (prefix hidden states + condition mask +
noise -> normalized chunk), used instead of "decode" when head.type == "continuous".

`load_bundle(dir)` validates everything before a model is touched: any missing / extra / tampered file,
unsupported version, inconsistent spec or unknown variant raises BundleError naming the file and the expected
vs found values. There is no fallback to another variant or model.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from etc_ros.core.errors import BundleError

BUNDLE_FORMAT = "etc-vla-bundle"
BUNDLE_FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
MANIFEST_FILE = "manifest.json"
SPEC_FILE = "spec.json"
PROCESSOR_DIR = "processor"
TORCH_DIR = "torch"
MODEL_CARD_MD = "model_card.md"
MODEL_CARD_JSON = "model_card.json"
SPEC_VERSION = 1

VARIANTS = ("fp32", "int8-dynamic", "int8-static", "fp16")
HEAD_TYPES = ("tokens", "continuous")
TOKEN_ROLES = ("vision", "embed", "prefill", "decode")
CONTINUOUS_ROLES = ("vision", "embed", "prefill", "head")
PROCESSOR_FILES = ("processor.json", "tokenizer.json", "norm_stats.json")  # action_tokenizer.json: token heads


def roles_for(head_type: str) -> tuple[str, ...]:
    if head_type == "tokens":
        return TOKEN_ROLES
    if head_type == "continuous":
        return CONTINUOUS_ROLES
    raise BundleError(f"unknown head type {head_type!r}; this runtime knows {list(HEAD_TYPES)}")


# ------------------------------------------------------------------------------------------------ checksums
def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def list_files(root: str | Path) -> list[str]:
    """Relative POSIX paths of every regular file under root (sorted), manifest.json excluded."""
    root = Path(root)
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_file() or p.is_symlink():
            rel = p.relative_to(root).as_posix()
            if rel != MANIFEST_FILE:
                out.append(rel)
    return out


def file_table(root: str | Path) -> dict[str, dict]:
    root = Path(root)
    return {rel: {"sha256": sha256_file(root / rel), "bytes": (root / rel).stat().st_size} for rel in list_files(root)}


def directory_digest(root: str | Path) -> str:
    """One sha256 over (relative path, file sha256) of every file of a directory (the source checkpoint hash)."""
    h = hashlib.sha256()
    root = Path(root)
    for rel in list_files(root) + ([MANIFEST_FILE] if (root / MANIFEST_FILE).is_file() else []):
        h.update(rel.encode("utf-8") + b"\0" + sha256_file(root / rel).encode("ascii") + b"\n")
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------ spec
def build_spec(processor: Any, *, cameras: list[str], control_hz: float, camera_resolution: Mapping[str, Any]
               | None = None, head_type: str = "tokens", extra: Mapping[str, Any] | None = None) -> dict:
    """The observation / action spec of a policy, derived from its processor (the values the model was trained
    with) plus what the checkpoint does not know (camera names, control rate)."""
    from etc_ros.core import spec as robot_spec

    c = processor.config
    at = processor.action_tokenizer
    horizon = int(at.horizon) if at is not None else int((extra or {}).get("horizon", robot_spec.CHUNK_HORIZON))
    action_dim = int(at.action_dim) if at is not None else int((extra or {}).get("action_dim", robot_spec.ACTION_DIM))
    st = processor.norm_stats.get("state")
    state_dim = int(st.dim) if st is not None else robot_spec.STATE_DIM
    cams = [str(x) for x in cameras]
    if len(cams) != int(c.n_views):
        raise BundleError(f"the model takes {c.n_views} camera view(s) but {len(cams)} camera name(s) were given: "
                          f"{cams}")
    if len(set(cams)) != len(cams):
        raise BundleError(f"camera names must be unique, got {cams}")
    if not (isinstance(control_hz, (int, float)) and math.isfinite(control_hz) and control_hz > 0):
        raise BundleError(f"control_hz must be a positive number, got {control_hz!r}")
    out = {
        "spec_version": SPEC_VERSION,
        "robot": robot_spec.ROBOT_MODEL,
        "control_hz": float(control_hz),
        "horizon": horizon,
        "chunk_horizon": horizon,
        "cameras": cams,
        "image_size": [int(c.image_size), int(c.image_size)],
        "image_format": "uint8 HxWx3 RGB (any size; resized by the processor)",
        "camera_resolution": {k: list(v) for k, v in (camera_resolution or {}).items()},
        "state_dim": state_dim,
        "state_names": (list(robot_spec.STATE_NAMES) if state_dim == robot_spec.STATE_DIM
                        else [f"s{i}" for i in range(state_dim)]),
        "state_layout": "6 arm joint positions [rad] (waist..wrist_rotate) + gripper opening in [0, 1] (1 = open)",
        "uses_state": bool(c.use_state or c.state_embedding),
        "action_dim": action_dim,
        "action_names": (list(robot_spec.ACTION_NAMES) if action_dim == robot_spec.ACTION_DIM
                         else [f"a{i}" for i in range(action_dim)]),
        "action_space": "Bridge: delta EE xyz [m] + delta roll/pitch/yaw [rad] in base_link + absolute gripper [0, 1]",
        "instruction": "free text (one task per episode)",
        "head": head_type,
        "normalization": {k: v.mode for k, v in processor.norm_stats.items()},
    }
    if extra:
        out.update({k: v for k, v in extra.items() if k not in ("horizon", "action_dim")})
    return out


def check_spec_against_processor(spec: Mapping[str, Any], processor: Any, where: str = SPEC_FILE) -> None:
    """spec.json must describe what the processor (and so the model) really takes and produces."""
    c = processor.config
    want: list[tuple[str, Any, Any]] = [
        ("image_size", list(spec.get("image_size", [])), [int(c.image_size), int(c.image_size)]),
        ("number of cameras", len(spec.get("cameras", []) or []), int(c.n_views)),
        ("uses_state", bool(spec.get("uses_state", c.use_state)), bool(c.use_state or c.state_embedding)),
    ]
    if spec.get("head") == "tokens" and c.action_format != "tokens":
        raise BundleError(f"{where}: head 'tokens' but the processor builds {c.action_format!r} prompts "
                          "(spec and model do not match)")
    at = processor.action_tokenizer
    if at is not None:
        want += [("horizon", spec.get("horizon"), int(at.horizon)),
                 ("action_dim", spec.get("action_dim"), int(at.action_dim))]
    st = processor.norm_stats.get("state")
    if st is not None:
        want.append(("state_dim", spec.get("state_dim"), int(st.dim)))
    ac = processor.norm_stats.get("action")
    if ac is not None:
        want.append(("action_dim (action norm stats)", spec.get("action_dim"), int(ac.dim)))
    for name, found, expected in want:
        if found != expected:
            raise BundleError(f"{where}: {name} is {found!r} but the processor/model says {expected!r} "
                              "(spec and model do not match)")
    for key in ("control_hz", "horizon", "cameras", "state_dim", "action_dim"):
        if key not in spec:
            raise BundleError(f"{where}: missing key {key!r}")
    hz = spec["control_hz"]
    if not (isinstance(hz, (int, float)) and math.isfinite(hz) and hz > 0):
        raise BundleError(f"{where}: control_hz must be a positive number, got {hz!r}")


def check_expected_spec(spec: Mapping[str, Any], expect: Mapping[str, Any] | None, bundle: str | Path) -> None:
    """The caller's expectations (e.g. the ROS config's cameras and rate) must match the bundle's spec."""
    for k, v in (expect or {}).items():
        if k not in spec:
            raise BundleError(f"{bundle}: spec has no {k!r} to compare with the expected {v!r}")
        found = spec[k]
        same = found == v
        if isinstance(v, (list, tuple)) and isinstance(found, (list, tuple)):
            same = list(found) == list(v)
        elif isinstance(v, (int, float)) and isinstance(found, (int, float)):
            same = math.isclose(float(found), float(v), rel_tol=1e-9, abs_tol=1e-12)
        if not same:
            raise BundleError(f"{bundle}: spec mismatch for {k!r}: expected {v!r}, the bundle has {found!r}")


# ------------------------------------------------------------------------------------------------ manifest
@dataclass
class BundleInfo:
    """A validated bundle: what the runtime needs to open it."""

    root: Path
    manifest: dict
    spec: dict
    head_type: str
    variants: dict = field(default_factory=dict)

    def graph_paths(self, variant: str) -> dict[str, Path]:
        v = self.variant(variant)
        return {role: self.root / rel for role, rel in v["graphs"].items()}

    def variant(self, name: str) -> dict:
        if name not in self.variants:
            raise BundleError(f"{self.root}: variant {name!r} is not in this bundle (it has {sorted(self.variants)}); "
                              f"export it with `etc-vla export --quantize {name}`")
        return self.variants[name]

    @property
    def processor_dir(self) -> Path:
        return self.root / self.manifest.get("processor_dir", PROCESSOR_DIR)

    @property
    def torch_dir(self) -> Path | None:
        d = self.manifest.get("torch_dir")
        return None if not d else self.root / d

    @property
    def head(self) -> dict:
        return dict(self.manifest.get("head") or {})


def read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise BundleError(f"{path.parent}: missing {what} ({path.name})")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{path}: cannot read {what}: {e}") from None
    if not isinstance(obj, dict):
        raise BundleError(f"{path}: {what} must be a JSON object")
    return obj


def verify_files(root: Path, manifest: Mapping[str, Any]) -> None:
    """Every listed file exists with its size and sha256; no file exists that is not listed."""
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{root / MANIFEST_FILE}: 'files' (the checksum table) is missing or empty")
    for rel, meta in sorted(files.items()):
        if not isinstance(meta, dict) or "sha256" not in meta:
            raise BundleError(f"{root / MANIFEST_FILE}: entry for {rel!r} has no sha256")
        p = root / rel
        if not p.is_file():
            raise BundleError(f"{root}: file {rel} listed in the manifest is missing")
        size = p.stat().st_size
        if "bytes" in meta and int(meta["bytes"]) != size:
            raise BundleError(f"{root}: file {rel} has {size} bytes, the manifest expects {int(meta['bytes'])} "
                              "(modified or truncated)")
        digest = sha256_file(p)
        if digest != meta["sha256"]:
            raise BundleError(f"{root}: checksum mismatch for {rel}: expected sha256 {meta['sha256']}, "
                              f"found {digest} (the file was modified)")
    extra = sorted(set(list_files(root)) - set(files))
    if extra:
        raise BundleError(f"{root}: file(s) not in the manifest: {extra[:5]}{' ...' if len(extra) > 5 else ''} "
                          "(a bundle is read-only; re-export instead of editing it)")


def load_bundle(root: str | Path, *, verify: bool = True, variant: str | None = None) -> BundleInfo:
    """Read and validate a bundle (see the module docstring). `variant`: also check that it exists."""
    root = Path(root)
    if not root.is_dir():
        raise BundleError(f"{root}: no such bundle directory")
    man = read_json(root / MANIFEST_FILE, "bundle manifest")
    if man.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{root / MANIFEST_FILE}: format is {man.get('format')!r}, expected {BUNDLE_FORMAT!r} "
                          "(not a policy bundle)")
    ver = man.get("bundle_format_version")
    if ver not in SUPPORTED_VERSIONS:
        raise BundleError(f"{root / MANIFEST_FILE}: bundle format version {ver!r} is not supported by this runtime "
                          f"(supports {list(SUPPORTED_VERSIONS)}); re-export the bundle or update etc_ros")
    if verify:
        verify_files(root, man)
    head = man.get("head") or {}
    head_type = head.get("type")
    roles = roles_for(str(head_type)) if head_type in HEAD_TYPES else None
    if roles is None:
        raise BundleError(f"{root / MANIFEST_FILE}: head type {head_type!r} is not one of {list(HEAD_TYPES)}")
    spec = read_json(root / man.get("spec_file", SPEC_FILE), "policy spec")
    sv = spec.get("spec_version")
    if sv != SPEC_VERSION:
        raise BundleError(f"{root / SPEC_FILE}: spec_version {sv!r} is not supported (expected {SPEC_VERSION})")
    if spec.get("head") != head_type:
        raise BundleError(f"{root / SPEC_FILE}: head is {spec.get('head')!r} but the manifest says {head_type!r}")
    variants = man.get("variants")
    if not isinstance(variants, dict) or not variants:
        raise BundleError(f"{root / MANIFEST_FILE}: no variants (graph sets) listed")
    files = man.get("files") or {}
    for name, v in variants.items():
        if name not in VARIANTS:
            raise BundleError(f"{root / MANIFEST_FILE}: unknown variant {name!r} (known: {list(VARIANTS)})")
        graphs = (v or {}).get("graphs")
        if not isinstance(graphs, dict):
            raise BundleError(f"{root / MANIFEST_FILE}: variant {name!r} has no 'graphs'")
        missing = [r for r in roles if r not in graphs]
        if missing:
            raise BundleError(f"{root / MANIFEST_FILE}: variant {name!r} lacks graph(s) {missing} needed by a "
                              f"{head_type!r} head (has {sorted(graphs)})")
        for role, rel in graphs.items():
            if verify and rel not in files:
                raise BundleError(f"{root / MANIFEST_FILE}: variant {name!r} graph {role!r} -> {rel} is not in the "
                                  "checksum table")
            if not (root / rel).is_file():
                raise BundleError(f"{root}: variant {name!r} graph {role!r}: file {rel} is missing")
    pdir = root / man.get("processor_dir", PROCESSOR_DIR)
    for f in PROCESSOR_FILES:
        if not (pdir / f).is_file():
            raise BundleError(f"{root}: processor file {pdir.name}/{f} is missing")
    info = BundleInfo(root=root, manifest=man, spec=spec, head_type=str(head_type), variants=dict(variants))
    if variant is not None:
        info.variant(variant)
    return info


def check_processor_copies(info: BundleInfo) -> None:
    """A bundle with its PyTorch checkpoint (torch/) carries the processor files twice: they must be the same
    files, whatever backend runs (else the graphs were exported from another model than the one shipped)."""
    d = info.torch_dir
    if d is None or not d.is_dir():
        return
    for f in PROCESSOR_FILES + ("action_tokenizer.json",):
        a, b = info.processor_dir / f, d / f
        if a.is_file() != b.is_file() or (a.is_file() and sha256_file(a) != sha256_file(b)):
            want = f"sha256 {sha256_file(a)}" if a.is_file() else "no such file"
            found = f"sha256 {sha256_file(b)}" if b.is_file() else "no such file"
            raise BundleError(f"{info.root}: {d.name}/{f} differs from {info.processor_dir.name}/{f}: the "
                              f"PyTorch checkpoint and the runtime processor must be the same files (expected "
                              f"{want}, found {found})")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _processor_parts(pdir: Path, root: Path):
    """processor.json, action_tokenizer.json (optional), norm_stats.json and tokenizer.json, each parsed on its
    own so that a damaged file is a BundleError naming it (not a raw JSON / type error or a bare ModelError)."""
    from etc_ros.core.action_tokenizer import action_tokenizer_from_dict
    from etc_ros.core.errors import ModelError
    from etc_ros.core.normalize import load_norm_stats
    from etc_ros.core.processor import ProcessorConfig

    def rel(f: str) -> str:
        return f"{pdir.relative_to(root).as_posix()}/{f}" if pdir.is_relative_to(root) else str(pdir / f)

    bad = (ModelError, TypeError, ValueError, KeyError, AttributeError, OSError)
    meta = read_json(pdir / "processor.json", "processor config")
    if meta.get("format") != "etc-vla-processor":
        raise BundleError(f"{root}: {rel('processor.json')}: format is {meta.get('format')!r}, expected "
                          "'etc-vla-processor'")
    try:
        cfg = ProcessorConfig.from_dict(meta.get("config") or {})
        for k in ("image_size", "image_tokens_per_view", "n_views", "state_bins", "action_token_offset",
                  "n_action_tokens", "max_length"):
            v = getattr(cfg, k)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ModelError(f"processor config: {k} must be an int, got {v!r}")
    except bad as e:
        raise BundleError(f"{root}: {rel('processor.json')} is invalid: {_one_line(e)}") from None
    at = None
    if (pdir / "action_tokenizer.json").is_file():
        d = read_json(pdir / "action_tokenizer.json", "action tokenizer")
        try:
            at = action_tokenizer_from_dict(d)
        except bad as e:
            raise BundleError(f"{root}: {rel('action_tokenizer.json')} is invalid: {_one_line(e)}") from None
    try:
        stats = load_norm_stats(pdir / "norm_stats.json")
    except bad as e:
        msg = _one_line(e).replace(str(pdir / "norm_stats.json") + ": ", "")
        raise BundleError(f"{root}: {rel('norm_stats.json')} is invalid: {msg}") from None
    try:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(pdir / "tokenizer.json"))
    except Exception as e:  # noqa: BLE001 - the tokenizers library raises plain Exception subclasses
        raise BundleError(f"{root}: {rel('tokenizer.json')} cannot be read: {_one_line(e)[:300]}") from None
    return cfg, at, stats, tok, rel


def check_norm_stats(info: BundleInfo, processor: Any, rel: Any = None) -> None:
    """norm_stats.json against spec.json: the quantities spec.json says are normalized (and their modes) are the
    ones in the file, each of the spec's dimension (every statistic is finite: NormStats checks that)."""
    where = f"{info.root}: {rel('norm_stats.json') if rel else PROCESSOR_DIR + '/norm_stats.json'}"
    stats = processor.norm_stats
    norm = info.spec.get("normalization")
    if isinstance(norm, Mapping):
        want = {str(k): str(v) for k, v in norm.items()}
        found = {k: v.mode for k, v in stats.items()}
        if want != found:
            raise BundleError(f"{where}: holds {found} but {SPEC_FILE} says the policy normalizes {want}")
    for key, spec_key in (("state", "state_dim"), ("action", "action_dim")):
        st = stats.get(key)
        if st is not None and spec_key in info.spec and st.dim != info.spec[spec_key]:
            raise BundleError(f"{where}: {key!r} statistics have {st.dim} dimensions, expected "
                              f"{info.spec[spec_key]!r} ({SPEC_FILE} {spec_key})")


def load_processor(info: BundleInfo):
    """The bundle's VLAProcessor (the shared preprocessing code), checked against spec.json and the torch/ copy:
    every file parsed and named on failure, the action token block inside the tokenizer's vocabulary, the norm
    stats of spec.json's quantities and dimensions."""
    from etc_ros.core.errors import ModelError
    from etc_ros.core.processor import VLAProcessor

    check_processor_copies(info)
    pdir = info.processor_dir
    cfg, at, stats, tok, rel = _processor_parts(pdir, info.root)
    vocab = tok.get_vocab_size(with_added_tokens=True)
    if at is not None and cfg.action_format == "tokens":
        lo, n = cfg.action_token_offset, cfg.n_action_tokens
        if at.vocab_size > n:
            raise BundleError(f"{info.root}: {rel('action_tokenizer.json')} needs {at.vocab_size} action ids, "
                              f"{rel('processor.json')} reserves n_action_tokens = {n}: expected at most {n}, "
                              f"found {at.vocab_size}")
        if lo < 0 or lo + n > vocab:
            raise BundleError(f"{info.root}: {rel('processor.json')}: the action token block [{lo}, {lo + n}) must "
                              f"lie inside the vocabulary of {rel('tokenizer.json')}: expected ids 0..{vocab - 1}, "
                              f"found a block ending at id {lo + n - 1}")
    try:
        proc = VLAProcessor(tok, cfg, at, stats)
    except ModelError as e:
        raise BundleError(f"{info.root}: {rel('processor.json')} does not fit {rel('tokenizer.json')}: "
                          f"{_one_line(e)}") from None
    check_norm_stats(info, proc, rel)
    check_spec_against_processor(info.spec, proc, str(info.root / SPEC_FILE))
    if info.head_type == "tokens" and proc.action_tokenizer is None:
        raise BundleError(f"{info.root}: a token-head bundle needs processor/action_tokenizer.json")
    return proc


def write_manifest(root: str | Path, manifest: Mapping[str, Any]) -> Path:
    """Add the checksum table of every file now under root and write manifest.json atomically."""
    from etc_ros.core.io import atomic_write_json

    root = Path(root)
    man = dict(manifest)
    man["format"] = BUNDLE_FORMAT
    man["bundle_format_version"] = BUNDLE_FORMAT_VERSION
    man["files"] = file_table(root)
    return atomic_write_json(root / MANIFEST_FILE, man)
