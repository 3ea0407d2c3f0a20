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


def md_table(df, floatfmt: str = ".3f", cols=None) -> str:
    """A Markdown table of a DataFrame, or of a list of dicts (``cols``: which keys, in order);
    floats formatted with ``floatfmt``, a ``|`` inside a cell written as ``/``."""
    if isinstance(df, list):
        cols = list(cols or (df[0] if df else []))
        rows = [[r[c] for c in cols] for r in df]
    else:
        cols = list(cols or df.columns)
        rows = list(df[cols].itertuples(index=False))
    lines = ["| " + " | ".join(str(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        cells = [
            format(v, floatfmt) if isinstance(v, float) else str(v).replace("|", "/") for v in row
        ]
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


class AuthorsBiPO:
    """The authors' BiPO step, re-implemented for comparison (CaoYuanpu/BiPO): a Hugging Face
    model with the vector added to block ``layer``'s output by a forward hook, a second frozen
    copy of the model as the reference, recomputed at every step, AdamW with the HF trainer's
    cosine schedule (no warm-up) and gradient clipping at 1.0."""

    def __init__(self, hf, layer: int, *, lr: float, total_steps: int, beta: float = 0.1,
                 device="cpu", dtype=None) -> None:  # fmt: skip
        import copy

        from transformers import get_cosine_schedule_with_warmup

        self.hf, self.beta = hf, beta
        self.reference = copy.deepcopy(hf)
        for m in (hf, self.reference):
            m.requires_grad_(False)
        self.v = torch.zeros(hf.config.hidden_size, device=device, dtype=dtype, requires_grad=True)
        self.d = 1.0
        self.handle = hf.model.layers[layer].register_forward_hook(self._add)
        self.opt = torch.optim.AdamW([self.v], lr=lr, weight_decay=0.0)
        self.schedule = get_cosine_schedule_with_warmup(self.opt, 0, total_steps)

    def _add(self, module, inputs, output):
        out = output[0] if isinstance(output, tuple) else output
        delta = (self.d * self.v).to(out.dtype)
        return (out + delta,) + tuple(output[1:]) if isinstance(output, tuple) else out + delta

    def step(self, enc, idx, d: float, pad: int, device=None) -> float:
        """One optimiser step on pairs ``enc[idx]`` in direction ``d``; returns the loss."""
        import torch.nn.functional as F

        from steerlens.core.encoding import pair_rows

        ids, mask = pair_rows([enc[i] for i in idx], pad, device)
        attn = authors_attention_mask(enc, idx, ids)
        self.d = d
        lp = authors_logps(self.hf, ids, mask, attn)
        with torch.no_grad():
            ref = authors_logps(self.reference, ids, mask, attn)  # the second copy, no hook
        b = len(idx)
        z = (lp[:b] - ref[:b]) - (lp[b:] - ref[b:])
        loss = -F.logsigmoid(d * self.beta * z).mean()
        self.opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([self.v], 1.0)  # the HF trainer's default max_grad_norm
        self.opt.step()
        self.schedule.step()
        return loss.item()

    def close(self) -> None:
        self.handle.remove()
        del self.reference
