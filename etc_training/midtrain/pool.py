"""Candidate pool of general VLM data: image + conversation records in JSONL (parquet optional).

One record per line:

    {"id": "coco/000123", "image": "images/000123.png", "source": "coco_caption",
     "conversations": [{"from": "human", "value": "<image>\\nWhat is in the picture?"},
                       {"from": "gpt", "value": "Two red blocks on a table."}],
     ... any other keys are kept (e.g. "robot_like", "meta")}

- `image`: a path; relative paths resolve against the directory of the JSONL file (the recipe's general-source
  loader, etc_training/recipe/data.py, uses the same rule, so a pool file is already a valid Stage-1 source).
- `conversations`: alternating human / gpt turns starting with human, at least one pair; "<image>" placeholders
  may appear in human turns (they are dropped when text is tokenized: the image tokens come first anyway).
- `source`: the dataset the record came from (score distributions, MMD and precision@K are reported per source).

A pool is a .jsonl file, a directory holding pool.jsonl (+ pool.json manifest, images/), or a .parquet file with
the columns id, image, source, conversations (JSON text) and extra (JSON text of the other keys).

LLaVA-style JSON (one list of {id, image, conversations: [{from, value}]}) converts both ways:
`import_llava` / `export_llava`; a round trip gives back the same list (image paths relative to the image root).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from etc_training.midtrain import MidtrainError

POOL_FILE = "pool.jsonl"
MANIFEST_FILE = "pool.json"
HUMAN, GPT = "human", "gpt"
IMAGE_PLACEHOLDER = "<image>"
ROBOT_PREFIX = "robot/"  # group name prefix of robot / ETC items (positives)


@dataclass
class Pool:
    records: list[dict]
    path: Path  # the JSONL / parquet file
    base_dir: Path  # relative image paths resolve against this
    manifest: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    def sources(self) -> list[str]:
        return sorted({r["source"] for r in self.records})

    def image_path(self, rec: dict) -> Path:
        return resolve_image(rec, self.base_dir)


# ---------------------------------------------------------------------------------------------- records
def validate_record(rec: Any, where: str, default_source: str | None = None) -> dict:
    """Check one pool record; returns it (with `source` filled from default_source when missing)."""
    if not isinstance(rec, dict):
        raise MidtrainError(f"{where}: a pool record must be a JSON object, got {type(rec).__name__}")
    rid = rec.get("id")
    if isinstance(rid, int) and not isinstance(rid, bool):
        rid = str(rid)
        rec = {**rec, "id": rid}
    if not isinstance(rid, str) or not rid.strip():
        raise MidtrainError(f"{where}: record needs a non-empty string 'id'")
    img = rec.get("image")
    if not isinstance(img, str) or not img.strip():
        raise MidtrainError(f"{where}: record {rid!r} needs an 'image' path (string); text-only records are not "
                            "candidates (the features need an image)")
    src = rec.get("source", default_source)
    if not isinstance(src, str) or not src.strip():
        raise MidtrainError(f"{where}: record {rid!r} needs a 'source' name")
    if src.startswith(ROBOT_PREFIX):
        raise MidtrainError(f"{where}: record {rid!r}: source names starting with {ROBOT_PREFIX!r} are reserved "
                            "for the robot data")
    conv = rec.get("conversations")
    if not isinstance(conv, list) or len(conv) < 2:
        raise MidtrainError(f"{where}: record {rid!r} needs 'conversations' with at least one human/gpt pair")
    for k, turn in enumerate(conv):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise MidtrainError(f"{where}: record {rid!r} turn {k}: expected {{'from': ..., 'value': str}}")
        want = HUMAN if k % 2 == 0 else GPT
        if turn.get("from") != want:
            raise MidtrainError(f"{where}: record {rid!r} turn {k}: 'from' must be {want!r} (turns alternate "
                                f"human, gpt, ...), got {turn.get('from')!r}")
        text = turn["value"].replace(IMAGE_PLACEHOLDER, "").strip()
        if not text:
            raise MidtrainError(f"{where}: record {rid!r} turn {k} has no text")
    if len(conv) % 2:
        raise MidtrainError(f"{where}: record {rid!r}: the last human turn has no gpt answer")
    if "source" not in rec:
        rec = {**rec, "source": src}
    return rec


def qa_pairs(rec: dict) -> list[tuple[str, str]]:
    """[(question, answer), ...] of a pool record, "<image>" placeholders removed."""
    conv = rec["conversations"]
    return [(conv[i]["value"].replace(IMAGE_PLACEHOLDER, "").strip(), conv[i + 1]["value"].strip())
            for i in range(0, len(conv) - 1, 2)]


def record_qa(rec: dict) -> tuple[str, str]:
    """One (question, answer) text for the whole record: the human turns joined, the gpt turns joined. This is
    what the features and the perplexities are computed on (every turn of the sample counts)."""
    pairs = qa_pairs(rec)
    return "\n".join(q for q, _ in pairs), "\n".join(a for _, a in pairs)


def resolve_image(rec: dict, base_dir: str | Path) -> Path:
    p = Path(rec["image"])
    return p if p.is_absolute() else Path(base_dir) / p


# ---------------------------------------------------------------------------------------------- read / write
def _pool_file(path: Path) -> Path:
    if path.is_dir():
        f = path / POOL_FILE
        if not f.is_file():
            raise MidtrainError(f"{path}: no {POOL_FILE} in this directory")
        return f
    if not path.is_file():
        raise MidtrainError(f"pool not found: {path}")
    return path


def read_pool(path: str | Path) -> Pool:
    """A pool from a .jsonl / .parquet file or a directory with pool.jsonl. Ids must be unique."""
    f = _pool_file(Path(path))
    if f.suffix == ".parquet":
        records = _read_parquet(f)
    else:
        from etc_ros.core.io import iter_jsonl

        records = [validate_record(rec, f"{f}:{ln}") for ln, rec in iter_jsonl(f, MidtrainError)]
    if not records:
        raise MidtrainError(f"{f}: the pool is empty")
    seen: set[str] = set()
    for r in records:
        if r["id"] in seen:
            raise MidtrainError(f"{f}: duplicate record id {r['id']!r}")
        seen.add(r["id"])
    manifest = {}
    mf = f.parent / MANIFEST_FILE
    if mf.is_file():
        try:
            manifest = json.loads(mf.read_text())
        except json.JSONDecodeError as e:
            raise MidtrainError(f"{mf}: invalid JSON: {e}") from None
    return Pool(records, f, f.parent, manifest)


def write_pool(path: str | Path, records: Iterable[dict], manifest: dict | None = None) -> Path:
    """Write records (validated) as JSONL (or parquet when path ends with .parquet), atomically; a directory
    path gets pool.jsonl (+ pool.json when a manifest is given)."""
    from etc_ros.core.io import atomic_write, atomic_write_json

    p = Path(path)
    if p.suffix not in (".jsonl", ".parquet"):
        p = p / POOL_FILE
    recs = [validate_record(r, f"record {k}") for k, r in enumerate(records)]
    if p.suffix == ".parquet":
        _write_parquet(p, recs)
    else:
        def w(tmp: Path) -> None:
            with open(tmp, "w", encoding="utf-8") as fh:
                for r in recs:
                    fh.write(json.dumps(r, ensure_ascii=False) + "\n")

        atomic_write(p, w)
    if manifest is not None:
        atomic_write_json(p.parent / MANIFEST_FILE, manifest)
    return p


_PARQUET_COLS = ("id", "image", "source", "conversations")


def _write_parquet(p: Path, recs: Sequence[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from etc_ros.core.io import atomic_write

    cols = {
        "id": [r["id"] for r in recs],
        "image": [r["image"] for r in recs],
        "source": [r["source"] for r in recs],
        "conversations": [json.dumps(r["conversations"], ensure_ascii=False) for r in recs],
        "extra": [json.dumps({k: v for k, v in r.items() if k not in _PARQUET_COLS}, ensure_ascii=False)
                  for r in recs],
    }
    atomic_write(p, lambda tmp: pq.write_table(pa.table(cols), str(tmp)))


def _read_parquet(f: Path) -> list[dict]:
    import pyarrow.parquet as pq

    try:
        t = pq.read_table(str(f)).to_pydict()
    except Exception as e:  # noqa: BLE001
        raise MidtrainError(f"{f}: cannot read parquet: {e}") from None
    missing = [c for c in _PARQUET_COLS if c not in t]
    if missing:
        raise MidtrainError(f"{f}: parquet pool lacks column(s) {missing}")
    out = []
    for k in range(len(t["id"])):
        try:
            rec = {"id": t["id"][k], "image": t["image"][k], "source": t["source"][k],
                   "conversations": json.loads(t["conversations"][k])}
            if t.get("extra") and t["extra"][k]:
                rec.update(json.loads(t["extra"][k]))
        except (TypeError, json.JSONDecodeError) as e:
            raise MidtrainError(f"{f} row {k}: bad conversations / extra JSON: {e}") from None
        out.append(validate_record(rec, f"{f} row {k}"))
    return out


# ---------------------------------------------------------------------------------------------- LLaVA layout
def import_llava(json_path: str | Path, out_path: str | Path, image_root: str | Path | None = None,
                 source: str | None = None, check_images: bool = True, skip_text_only: bool = True) -> dict:
    """LLaVA-style JSON (a list of {id, image, conversations: [{from, value}]}) -> pool JSONL at out_path.

    Image paths are taken relative to `image_root` (default: the JSON file's directory) and written relative to
    the output file's directory. `source` defaults to the JSON file's stem. Records without an image are skipped
    (counted) unless skip_text_only=False, which makes them an error. Other keys are kept as they are."""
    jp = Path(json_path)
    if not jp.is_file():
        raise MidtrainError(f"LLaVA JSON not found: {jp}")
    try:
        data = json.loads(jp.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise MidtrainError(f"{jp}: invalid JSON: {e}") from None
    if not isinstance(data, list):
        raise MidtrainError(f"{jp}: expected a JSON list of records (LLaVA layout), got {type(data).__name__}")
    root = Path(image_root) if image_root is not None else jp.parent
    out = Path(out_path)
    if out.suffix not in (".jsonl", ".parquet"):
        out = out / POOL_FILE
    out_dir = out.parent.resolve()
    src = source or jp.stem
    recs, skipped, missing = [], 0, []
    for k, r in enumerate(data):
        where = f"{jp} record {k}"
        if not isinstance(r, dict):
            raise MidtrainError(f"{where}: expected an object, got {type(r).__name__}")
        if not r.get("image"):
            if skip_text_only:
                skipped += 1
                continue
            raise MidtrainError(f"{where}: no 'image' (text-only records cannot be candidates)")
        if not isinstance(r["image"], str):
            raise MidtrainError(f"{where}: 'image' must be one path string (multi-image records are not "
                                f"supported), got {type(r['image']).__name__}")
        img_abs = (root / r["image"]).resolve()
        if check_images and not img_abs.is_file():
            missing.append(str(img_abs))
            if len(missing) > 20:
                break
            continue
        rec = dict(r)
        rec["image"] = os.path.relpath(img_abs, out_dir)
        rec.setdefault("source", src)
        recs.append(validate_record(rec, where))
    if missing:
        raise MidtrainError(f"{jp}: {len(missing)}{'+' if len(missing) > 20 else ''} image file(s) not found "
                            f"under {root}, e.g. {missing[0]} (pass the right image root, or check_images=False)")
    if not recs:
        raise MidtrainError(f"{jp}: no record with an image to import")
    ids = [r["id"] for r in recs]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise MidtrainError(f"{jp}: duplicate record id {dup!r}")
    manifest = {"format": "etc-midtrain-pool/1", "imported_from": str(jp), "image_root": str(root),
                "n": len(recs), "skipped_text_only": skipped, "sources": sorted({r["source"] for r in recs})}
    write_pool(out, recs, manifest if out.name == POOL_FILE else None)
    return {"out": str(out), "n": len(recs), "skipped_text_only": skipped, "sources": manifest["sources"]}


def export_llava(pool_path: str | Path, out_json: str | Path, image_root: str | Path,
                 keep_keys: Sequence[str] = ()) -> dict:
    """Pool -> LLaVA-style JSON list with image paths relative to image_root. Pool-only keys ('source' and those
    the built-in pool adds) are dropped unless listed in keep_keys; other keys are kept."""
    from etc_ros.core.io import atomic_write_text

    pool = read_pool(pool_path)
    root = Path(image_root).resolve()
    drop = {"source", "robot_like", "meta"} - set(keep_keys)
    out = []
    for r in pool.records:
        rec = {k: v for k, v in r.items() if k not in drop}
        rec["image"] = os.path.relpath(pool.image_path(r).resolve(), root)
        out.append(rec)
    atomic_write_text(out_json, json.dumps(out, ensure_ascii=False, indent=1) + "\n")
    return {"out": str(out_json), "n": len(out)}


# ---------------------------------------------------------------------------------------------- feature items
def pool_items(pool: Pool) -> list[dict]:
    """Pool records as feature items: {id, group, prompt, answer, images: [{"path"}], _base_dir}."""
    items = []
    for r in pool.records:
        q, a = record_qa(r)
        items.append({"id": r["id"], "group": r["source"], "prompt": q, "answer": a,
                      "images": [{"path": r["image"]}], "_base_dir": str(pool.base_dir)})
    return items


def robot_items(path: str | Path, splits: Sequence[str] | None = ("train",)) -> list[dict]:
    """Robot-side (positive) samples as feature items: an ETC directory (`etc-vla etc build`, index.json) or
    JSONL of ETC / prompt-answer records. group = "robot/<category>"."""
    from etc_training.recipe.config import RecipeError
    from etc_training.recipe.data import normalize_record, read_jsonl

    p = Path(path)
    try:
        if p.is_dir() and (p / "index.json").is_file():
            from etc_training.etc import load_samples

            recs = load_samples(p, list(splits) if splits else None)
            for k, r in enumerate(recs):
                r.update(normalize_record(r, f"{p} record {k}", "etc"))
                r["_base_dir"] = str(p)
        elif p.exists():
            recs = read_jsonl(p, "etc")
            if splits:
                recs = [r for r in recs if r.get("split", "train") in splits]
        else:
            raise MidtrainError(f"robot data not found: {p} (an ETC directory or JSONL records)")
    except RecipeError as e:
        raise MidtrainError(str(e)) from None
    if not recs:
        raise MidtrainError(f"{p}: no robot records in splits {list(splits or [])}")
    items = []
    for r in recs:
        items.append({"id": str(r.get("id", len(items))), "group": ROBOT_PREFIX + str(r.get("category", "etc")),
                      "prompt": r["prompt"], "answer": r["answer"], "images": r["images"],
                      "_base_dir": r["_base_dir"]})
    return items


__all__ = ["Pool", "validate_record", "qa_pairs", "record_qa", "resolve_image", "read_pool", "write_pool",
           "import_llava", "export_llava", "pool_items", "robot_items", "POOL_FILE", "MANIFEST_FILE",
           "ROBOT_PREFIX"]
