from __future__ import annotations

import os
import stat

import pytest
import torch

import steerlens as sl
from steerlens.core.fileio import atomic_write, current_umask


@pytest.fixture
def umask():
    def set_(mask):
        os.umask(mask)

    old = os.umask(0o022)
    yield set_
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_saved_files_respect_the_umask(tmp_path, umask, mask):
    umask(mask)
    assert current_umask() == mask
    v = sl.SteeringVector({"blocks.1.hook_resid_post": torch.ones(4)})
    paths = [v.save(tmp_path / "v.safetensors"), v.to_gguf(tmp_path / "v.gguf")]
    expected = 0o666 & ~mask
    for p in paths:
        assert stat.S_IMODE(p.stat().st_mode) == expected, p


def test_checkpoint_respects_the_umask(tmp_path, umask, tiny):
    umask(0o022)
    pairs = sl.load_pairs(sl.demo_data_path("train"))[:2]
    ckpt = tmp_path / "run.ckpt"
    sl.train_bipo(
        tiny, pairs, layers=1, config=sl.BiPOConfig(epochs=1, progress=False), checkpoint=ckpt
    )
    assert stat.S_IMODE(ckpt.stat().st_mode) == 0o644


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("old")

    def boom(tmp):
        open(tmp, "w").write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(p, boom)
    assert p.read_text() == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["a.txt"]
