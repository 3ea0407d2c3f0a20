"""Helpers shared by the benchmark scripts (not part of the package)."""

from __future__ import annotations

import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("STEERLENS_SHARED_DATA") or ROOT.parent / "shared" / "data")
DOCS = ROOT / "docs"


def require_shared() -> Path:
    if not SHARED.is_dir():
        sys.exit(f"the real datasets are expected at {SHARED}")
    return SHARED


def peak_rss_mb() -> float:
    """Peak resident set size of this process, in MiB (Linux ru_maxrss is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
        cpu = model
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, Python {platform.python_version()}"
    )


def git_rev() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class Timer:
    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0


def md_table(df, floatfmt: str = ".3f") -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(str(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        cells = [format(v, floatfmt) if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bipo_schedule(n: int, batch: int, epochs: int = 1, seed: int = 0):
    """sl.train_bipo's batch order and d draws (the same generator calls), one list per epoch."""
    gen = torch.Generator().manual_seed(seed)
    steps = math.ceil(n / batch)
    out = []
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        signs = torch.randint(0, 2, (steps,), generator=gen) * 2 - 1
        out.append(
            [(perm[s * batch : (s + 1) * batch].tolist(), float(signs[s])) for s in range(steps)]
        )
    return out


def authors_attention_mask(enc, idx, ids):
    """The 0/1 mask of rows ``[matching_1..B, not_matching_1..B]`` (right padding masked)."""
    attn = torch.zeros_like(ids)
    for r in range(ids.shape[0]):
        e = enc[idx[r % len(idx)]]
        attn[r, : len(e.prompt) + len(e.matching if r < len(idx) else e.not_matching)] = 1
    return attn


def authors_logps(model, ids, mask, attn):
    """Summed answer log-probs from a plain HF model's full logits (the authors' way)."""
    logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1]
    logp = torch.log_softmax(logits.float(), -1)
    return (logp.gather(-1, ids[:, 1:, None])[..., 0] * mask[:, 1:]).sum(-1)
