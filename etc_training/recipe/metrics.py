"""What a training run reports: metrics.jsonl (one JSON object per logged step, rank 0 only), TensorBoard scalars
when tensorboard is installed, and the process's peak memory."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from etc_ros.core.io import atomic_write_text


class MetricsLog:
    """Appends one JSON object per line (rank 0 only); TensorBoard scalars when tensorboard is installed."""

    def __init__(self, path: Path, enabled: bool, tensorboard: bool, tb_dir: Path | None = None):
        self.path = Path(path)
        self.enabled = enabled
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

                self.tb = SummaryWriter(str(tb_dir or self.path.parent / "tensorboard"))
            except Exception:  # noqa: BLE001 - optional
                self.tb = None

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after `step` (they belong to work lost in a kill and will be redone)."""
        if not (self.enabled and self.path.is_file()):
            return
        keep = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # torn last line
            if int(row.get("step", 0)) <= step:
                keep.append(line)
        atomic_write_text(self.path, "".join(x + "\n" for x in keep))

    def write(self, row: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=_jsonable) + "\n")
        if self.tb is not None:
            step = int(row.get("global_step", row.get("step", 0)))
            for k, v in row.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "global_step"):
                    self.tb.add_scalar(f"{row.get('stage', 'train')}/{k}", v, step)
                elif isinstance(v, dict):
                    for kk, vv in v.items():
                        if isinstance(vv, (int, float)) and not isinstance(vv, bool):
                            self.tb.add_scalar(f"{row.get('stage', 'train')}/{k}/{kk}", vv, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _jsonable(o: Any):
    if isinstance(o, torch.Tensor):
        return o.item() if o.numel() == 1 else o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def read_metrics(path: str | Path) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        return []
    rows = []
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return rows


# ---------------------------------------------------------------------------------------------- memory
def peak_rss_mb() -> float:
    """Peak resident set size of this process since the last reset_peak_rss() (Linux VmHWM), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False
