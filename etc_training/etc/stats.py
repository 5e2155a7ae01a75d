"""Statistics of an ETC directory, per split / category / subtype (JSON + Markdown)."""
from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from etc_ros.core.io import atomic_write_json, atomic_write_text
from etc_training.etc.mixture import CATEGORIES, SUBTYPE_GROUP
from etc_training.etc.store import iter_samples, load_index


def _summ(xs: list[float]) -> dict:
    if not xs:
        return {}
    a = np.asarray(xs, dtype=float)
    return dict(mean=round(float(a.mean()), 3), min=round(float(a.min()), 3), max=round(float(a.max()), 3))


def _seg_summary(eps: list[dict]) -> dict:
    ev = [e["events_check"] for e in eps if "events_check" in e]
    sb = [e["subtasks_check"] for e in eps if "subtasks_check" in e]
    return dict(episodes_with_recorded_events=len(ev), events_agree=sum(1 for e in ev if e.get("ok")),
                max_event_frame_error=max((e.get("max_frame_error") or 0 for e in ev), default=None),
                episodes_with_recorded_subtasks=len(sb),
                subtask_boundary_precision=round(float(np.mean([s["precision"] for s in sb])), 4) if sb else None,
                subtask_boundary_recall=round(float(np.mean([s["recall"] for s in sb])), 4) if sb else None,
                subtask_boundary_f1=round(float(np.mean([s["f1"] for s in sb])), 4) if sb else None)


def compute_stats(etc_dir: str | Path) -> dict:
    idx = load_index(etc_dir)
    by_cat: Counter = Counter()
    by_sub: Counter = Counter()
    by_group: Counter = Counter()
    by_split: Counter = Counter()
    by_source: Counter = Counter()
    split_cat: dict[str, Counter] = defaultdict(Counter)
    templates: dict[str, Counter] = defaultdict(Counter)
    prompt_len: dict[str, list[int]] = defaultdict(list)
    answer_len: dict[str, list[int]] = defaultdict(list)
    episodes: dict[str, set] = defaultdict(set)
    traj_px: list[float] = []
    traj_closed: list[float] = []
    answers: dict[str, Counter] = defaultdict(Counter)
    for s in iter_samples(etc_dir):
        st, cat, sp = s["subtype"], s["category"], s["split"]
        by_cat[cat] += 1
        by_sub[st] += 1
        by_group[SUBTYPE_GROUP.get(st, "?")] += 1
        by_split[sp] += 1
        by_source[s.get("source", "unknown")] += 1
        split_cat[sp][cat] += 1
        templates[st][s.get("template", -1)] += 1
        prompt_len[st].append(len(s["prompt"].split()))
        answer_len[st].append(len(s["answer"].split()))
        episodes[cat].add(s["source_episode"])
        if st == "trajectory":
            loc = np.asarray(s["target"]["loc"], dtype=float)
            traj_px.append(float(np.linalg.norm(np.diff(loc, axis=0), axis=1).sum()))
            traj_closed.append(1.0 - float(np.mean(s["target"]["gripper"])))
        if st in ("done", "next_subtask", "relation", "gripper_relation"):
            answers[st][s["answer"]] += 1
    n = sum(by_cat.values())
    out = dict(
        n_samples=n, n_episodes=len(idx.get("episodes", [])),
        by_category={c: by_cat.get(c, 0) for c in CATEGORIES},
        category_fraction={c: round(by_cat.get(c, 0) / n, 4) if n else 0.0 for c in CATEGORIES},
        by_group=dict(by_group), by_subtype=dict(sorted(by_sub.items())), by_split=dict(by_split),
        by_source=dict(by_source), by_split_category={k: dict(v) for k, v in split_cat.items()},
        episodes_per_category={c: len(v) for c, v in episodes.items()},
        templates_used={k: {str(t): c for t, c in sorted(v.items())} for k, v in templates.items()},
        prompt_words={k: _summ(v) for k, v in prompt_len.items()},
        answer_words={k: _summ(v) for k, v in answer_len.items()},
        trajectory=dict(path_length_loc=_summ(traj_px), closed_fraction=_summ(traj_closed)),
        answer_distribution={k: dict(v.most_common(12)) for k, v in answers.items()},
        segmentation=_seg_summary(idx.get("episodes", [])),
    )
    return out


def stats_markdown(st: dict) -> str:
    lines = ["# ETC statistics", "", f"{st['n_samples']} samples from {st['n_episodes']} episodes.", "",
             "## Per category", "", "| category | samples | fraction | episodes |", "|---|---:|---:|---:|"]
    for c in CATEGORIES:
        lines.append(f"| {c} | {st['by_category'].get(c, 0)} | {st['category_fraction'].get(c, 0):.3f} | "
                     f"{st['episodes_per_category'].get(c, 0)} |")
    lines += ["", "## Per subtype", "", "| subtype | samples | templates used | prompt words (mean) | "
              "answer words (mean) |", "|---|---:|---:|---:|---:|"]
    for k, v in st["by_subtype"].items():
        lines.append(f"| {k} | {v} | {len(st['templates_used'].get(k, {}))} | "
                     f"{st['prompt_words'].get(k, {}).get('mean', 0)} | "
                     f"{st['answer_words'].get(k, {}).get('mean', 0)} |")
    lines += ["", "## Per split", "", "| split | " + " | ".join(CATEGORIES) + " |",
              "|---|" + "---:|" * len(CATEGORIES)]
    for sp, d in sorted(st["by_split_category"].items()):
        lines.append(f"| {sp} | " + " | ".join(str(d.get(c, 0)) for c in CATEGORIES) + " |")
    tr = st["trajectory"]
    if tr.get("path_length_loc"):
        lines += ["", "## Trajectories", "",
                  f"- path length on the 0-1023 grid: {tr['path_length_loc']}",
                  f"- fraction of waypoints with the gripper closed: {tr['closed_fraction']}"]
    if st.get("answer_distribution"):
        lines += ["", "## Answer distribution (most common)", ""]
        for k, d in st["answer_distribution"].items():
            lines.append(f"- {k}: " + "; ".join(f"{a!r} x{c}" for a, c in d.items()))
    if st.get("segmentation"):
        lines += ["", "## Plan segmentation vs recorded metadata", "", f"- {st['segmentation']}"]
    return "\n".join(lines) + "\n"


def write_stats(etc_dir: str | Path) -> list[Path]:
    st = compute_stats(etc_dir)
    d = Path(etc_dir)
    return [atomic_write_json(d / "stats.json", st), atomic_write_text(d / "stats.md", stats_markdown(st))]
