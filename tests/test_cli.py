from __future__ import annotations

import subprocess
import sys

import torch

import steerlens as sl
from steerlens import cli


def test_help_lists_subcommands():
    out = subprocess.run(
        [sys.executable, "-m", "steerlens.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for sub in ("info", "train", "eval", "sweep", "compare", "project", "export"):
        assert sub in out


def test_info_vector_compare_export(tmp_path, capsys):
    a = sl.SteeringVector(
        {"blocks.2.hook_resid_post": torch.tensor([3.0, 4.0])}, {"method": "bipo"}
    )
    b = sl.SteeringVector({"blocks.2.hook_resid_post": torch.tensor([4.0, 3.0])})
    pa, pb = a.save(tmp_path / "a.safetensors"), b.save(tmp_path / "b.safetensors")
    assert cli.main(["info", "--vector", str(pa)]) == 0
    out = capsys.readouterr().out
    assert "blocks.2.hook_resid_post: norm 5.0000" in out and '"method": "bipo"' in out
    assert cli.main(["compare", str(pa), str(pb)]) == 0
    assert "0.9600" in capsys.readouterr().out
    assert cli.main(["export", str(pa), "--format", "gguf", "--out", str(tmp_path / "a.gguf")]) == 0
    back = sl.SteeringVector.from_gguf(tmp_path / "a.gguf")
    assert torch.equal(
        back.vectors["blocks.2.hook_resid_post"], a.vectors["blocks.2.hook_resid_post"]
    )


def test_errors_are_reported_not_raised(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"xx")
    assert cli.main(["info", "--vector", str(bad)]) == 2
    assert "steerlens: error:" in capsys.readouterr().err


def test_train_on_local_model_folder(tmp_path, capsys):
    from steerlens.models import tiny_hf_model

    hf, tok = tiny_hf_model(n_layers=2, d_model=32)
    hf.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    out = tmp_path / "v.safetensors"
    code = cli.main(
        [
            "train",
            "--model",
            str(tmp_path / "m"),
            "--layer",
            "1",
            "--epochs",
            "1",
            "--limit",
            "8",
            "--eval-limit",
            "3",
            "--out",
            str(out),
            "--max-new-tokens",
            "4",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "held-out preference margin" in text and "[steered +6]" in text and "[unsteered]" in text
    v = sl.SteeringVector.load(out)
    assert v.metadata["method"] == "bipo" and v.hook_names == ["blocks.1.hook_resid_post"]
    assert (
        cli.main(["project", "--model", str(tmp_path / "m"), "--vector", str(out), "hi there"]) == 0
    )
    assert "projection" in capsys.readouterr().out
