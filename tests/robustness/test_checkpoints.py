"""Nothing lost: a run killed with SIGKILL resumes to the bit-identical vector; saves are atomic."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest
import torch

import steerlens as sl
from steerlens.core.errors import CheckpointError

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import steerlens as sl
    from steerlens.methods import bipo as bipo_mod

    ckpt, kill_at = sys.argv[1], int(sys.argv[2])
    real = bipo_mod.bipo_loss
    calls = {"n": 0}

    def deadly(*a, **k):
        calls["n"] += 1
        if calls["n"] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*a, **k)

    bipo_mod.bipo_loss = deadly
    model = sl.tiny_model(n_layers=4, d_model=64, seed=0)
    pairs = sl.load_pairs(sl.demo_data_path("train"))[:12]
    cfg = sl.BiPOConfig(epochs=3, lr=1e-2, warmup_steps=2, weight_decay=0.05, checkpoint_every=1,
                        progress=False)
    sl.train_bipo(model, pairs, layers=2, config=cfg, checkpoint=ckpt)
    """
)


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tiny, tmp_path):
    pairs = sl.load_pairs(sl.demo_data_path("train"))[:12]
    cfg = sl.BiPOConfig(
        epochs=3, lr=1e-2, warmup_steps=2, weight_decay=0.05, checkpoint_every=1, progress=False
    )
    full = sl.train_bipo(tiny, pairs, layers=2, config=cfg)

    ckpt = tmp_path / "run.ckpt"
    script = tmp_path / "victim.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(ckpt), "5"], capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert ckpt.exists()
    leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    resumed = sl.train_bipo(tiny, pairs, layers=2, config=cfg, checkpoint=ckpt, resume=True)
    h = "blocks.2.hook_resid_post"
    assert torch.equal(full.vectors[h], resumed.vectors[h])
    assert [r["train_loss"] for r in full.metadata["history"]] == [
        r["train_loss"] for r in resumed.metadata["history"]
    ]


def test_corrupt_checkpoint_is_rejected(tiny, tmp_path):
    ckpt = tmp_path / "run.ckpt"
    ckpt.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match=r"run.ckpt: not a readable checkpoint"):
        sl.train_bipo(
            tiny,
            sl.load_pairs(sl.demo_data_path("train"))[:2],
            layers=1,
            config=sl.BiPOConfig(epochs=1, progress=False),
            checkpoint=ckpt,
            resume=True,
        )


def test_kill_during_save_never_corrupts(tmp_path, monkeypatch):
    """If writing fails half-way, the old file is intact and no temp file is left."""
    import safetensors.torch as st

    p = tmp_path / "v.safetensors"
    sl.SteeringVector({"blocks.1.hook_resid_post": torch.ones(4)}).save(p)
    before = p.read_bytes()
    real = st.save_file

    def half_write(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(st, "save_file", half_write)
    with pytest.raises(OSError, match="disk full"):
        sl.SteeringVector({"blocks.1.hook_resid_post": torch.zeros(4)}).save(p, overwrite=True)
    monkeypatch.setattr(st, "save_file", real)
    assert p.read_bytes() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["v.safetensors"]


def test_save_never_overwrites_unless_asked(tmp_path):
    p = tmp_path / "v.safetensors"
    v = sl.SteeringVector({"blocks.1.hook_resid_post": torch.ones(4)})
    v.save(p)
    with pytest.raises(FileExistsError):
        v.save(p)
    with pytest.raises(FileExistsError):
        v.to_gguf(p.with_suffix(".gguf")) and v.to_gguf(p.with_suffix(".gguf"))
