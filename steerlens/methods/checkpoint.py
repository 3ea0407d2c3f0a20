"""Checkpoints of trained vectors (BiPO, RePS): the vector, the optimiser state, the epoch's
random state and the history, written atomically, with a fingerprint of the run they belong to.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from steerlens.core.data import PreferencePair
from steerlens.core.errors import CheckpointError
from steerlens.core.fileio import atomic_write, read_safetensors
from steerlens.methods.bipo_config import BiPOConfig


def fingerprint(pairs: Sequence[PreferencePair], hooks: Sequence[str], cfg: BiPOConfig) -> str:
    h = hashlib.sha256()
    for p in pairs:
        h.update(json.dumps([p.question, p.matching, p.not_matching]).encode())
    # settings that do not change the result stay out (a resumed run may change them)
    h.update(json.dumps([list(hooks), cfg.recipe()], sort_keys=True, default=str).encode())
    return h.hexdigest()[:20]


@dataclass
class TrainState:
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    epoch_loss_sum: float = 0.0
    epoch_rng: Tensor | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def save_checkpoint(
    path: Path,
    params: Sequence[Tensor],
    hook_names: Sequence[str],
    opt: torch.optim.Optimizer,
    state: TrainState,
    fingerprint: str,
) -> None:
    from safetensors.torch import save_file

    tensors: dict[str, Tensor] = {}
    for name, p in zip(hook_names, params, strict=True):
        tensors[f"vector::{name}"] = p.detach().cpu().clone()
    opt_state = opt.state_dict()["state"]
    for i in range(len(params)):
        for key, value in opt_state.get(i, {}).items():
            t = value if isinstance(value, Tensor) else torch.tensor(value)
            tensors[f"opt::{i}::{key}"] = t.detach().cpu().clone().reshape(-1)
    assert state.epoch_rng is not None
    tensors["rng::epoch"] = state.epoch_rng.clone()
    meta = {
        "steerlens_checkpoint": "1",
        "fingerprint": fingerprint,
        "hooks": json.dumps(list(hook_names)),
        "epoch": str(state.epoch),
        "step_in_epoch": str(state.step_in_epoch),
        "global_step": str(state.global_step),
        "epoch_loss_sum": repr(state.epoch_loss_sum),
        "seconds": repr(state.seconds),
        "history": json.dumps(state.history),
    }
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_checkpoint(
    path: Path,
    params: Sequence[Tensor],
    hook_names: Sequence[str],
    opt: torch.optim.Optimizer,
    fingerprint: str,
) -> TrainState:
    tensors, meta = read_safetensors(path, CheckpointError, "a readable checkpoint")
    if meta.get("steerlens_checkpoint") != "1":
        raise CheckpointError(f"{path}: not a steerlens BiPO checkpoint")
    if meta.get("fingerprint") != fingerprint:
        raise CheckpointError(
            f"{path}: the checkpoint belongs to another run (different data, layers or "
            "settings); start a new run or pass the same arguments"
        )
    with torch.no_grad():
        for name, p in zip(hook_names, params, strict=True):
            p.copy_(tensors[f"vector::{name}"])
    opt_state: dict[int, dict[str, Tensor]] = {}
    for key, t in tensors.items():
        if key.startswith("opt::"):
            _, i, k = key.split("::")
            opt_state.setdefault(int(i), {})[k] = t.reshape(()) if k == "step" else t
    sd = opt.state_dict()
    sd["state"] = opt_state
    opt.load_state_dict(sd)
    return TrainState(
        epoch=int(meta["epoch"]),
        step_in_epoch=int(meta["step_in_epoch"]),
        global_step=int(meta["global_step"]),
        epoch_loss_sum=float(meta["epoch_loss_sum"]),
        epoch_rng=tensors["rng::epoch"],
        history=json.loads(meta["history"]),
        seconds=float(meta["seconds"]),
    )
