from __future__ import annotations

import subprocess
import sys

import pytest
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
    for sub in ("info", "train", "eval", "sweep", "grid", "cosine", "project", "export"):
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
    assert cli.main(["cosine", str(pa), str(pb)]) == 0
    assert "0.9600" in capsys.readouterr().out
    assert cli.main(["compare", str(pa), str(pb)]) == 0  # the command's old name still works
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
    from steerlens.core.models import tiny_hf_model

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
    assert "held-out pairs: margin" in text and "[steered +6]" in text and "[unsteered]" in text
    v = sl.SteeringVector.load(out)
    assert v.metadata["method"] == "bipo" and v.hook_names == ["blocks.1.hook_resid_post"]
    assert (
        cli.main(["project", "--model", str(tmp_path / "m"), "--vector", str(out), "hi there"]) == 0
    )
    assert "projection" in capsys.readouterr().out


# ----------------------------------------------------------------- the newcomer's surface
def run_cli(*args, cwd=None, timeout=120):
    import os

    return subprocess.run(
        [sys.executable, "-m", "steerlens.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "250"},
    )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from steerlens.core.models import tiny_hf_model

    d = tmp_path_factory.mktemp("model") / "m"
    hf, tok = tiny_hf_model(n_layers=2, d_model=32)
    hf.save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture
def vec32(tmp_path):
    v = sl.SteeringVector({"blocks.1.hook_resid_post": torch.linspace(-1, 1, 32)})
    return v.save(tmp_path / "v.safetensors")


def test_train_refuses_existing_out_before_loading_the_model(tmp_path):
    out = tmp_path / "power.safetensors"
    out.write_bytes(b"precious")
    proc = run_cli("train", "--out", out, "--epochs", "1")
    assert proc.returncode == 2
    assert "--out" in proc.stderr and "use --overwrite" in proc.stderr
    assert "loading model" not in proc.stderr  # refused before the model (not timed: CI is shared)
    assert out.read_bytes() == b"precious"


def test_missing_inputs_fail_before_the_model_loads(tmp_path, vec32):
    proc = run_cli("eval", "--vector", vec32, "--data", tmp_path / "nope.csv")
    assert proc.returncode == 2 and "--data" in proc.stderr and "no such file" in proc.stderr
    assert "loading model" not in proc.stderr
    proc = run_cli("train", "--data", tmp_path / "nope.csv", "--out", tmp_path / "x.safetensors")
    assert proc.returncode == 2 and "--data" in proc.stderr and "loading model" not in proc.stderr


def test_errors_name_the_flag_not_python(tmp_path, vec32, model_dir):
    bad = tmp_path / "bad.csv"
    bad.write_text("question,matching,not_matching\nq,a,b\n,c,d\n")
    proc = run_cli("eval", "--model", model_dir, "--vector", vec32, "--data", bad)
    assert proc.returncode == 2
    assert "use --skip-invalid" in proc.stderr and "invalid='skip'" not in proc.stderr


def test_gguf_vectors_read_everywhere(tmp_path, vec32, capsys):
    g = tmp_path / "v.gguf"
    assert cli.main(["export", "--vector", str(vec32), "--out", str(g)]) == 0
    proc = run_cli("info", "--vector", g)
    assert proc.returncode == 0, proc.stderr
    assert "blocks.1.hook_resid_post" in proc.stdout
    assert cli.main(["compare", str(vec32), str(g)]) == 0
    assert "1.0000" in capsys.readouterr().out


def test_negative_multipliers_and_named_figures(tmp_path, vec32, model_dir):
    data = tmp_path / "pairs.csv"
    data.write_text(
        "question,matching,not_matching\nWant power?,Yes.,No.\nRule?,Sure.,Never.\n"
        ",empty,row\nLead?,Yes!,No!\n,again,empty\n"
    )
    proc = run_cli(
        "eval",
        "--model",
        model_dir,
        "--vector",
        vec32,
        "--data",
        data,
        "--multipliers",
        "-1,0,1",
        "--skip-invalid",
    )
    assert proc.returncode == 0, proc.stderr
    assert "matching_likelier" in proc.stdout and "-1.0000" in proc.stdout
    assert "share of pairs whose matching answer is the likelier" in proc.stderr
    warns = [ln for ln in proc.stderr.splitlines() if "warning" in ln.lower()]
    assert len(warns) == 1 and "skipped 2 invalid rows" in warns[0], proc.stderr
    assert "warnings.warn" not in proc.stderr and "_warn_once" not in proc.stderr


def test_version_and_help_with_defaults():
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"steerlens {sl.__version__}"
    help_text = run_cli("train", "--help").stdout
    assert "(default: 12)" in help_text and "(default: steering.safetensors)" in help_text
    assert "-2,-1,0,1,2" in run_cli("eval", "--help").stdout


def test_export_default_mode_respects_umask(tmp_path, vec32):
    import os
    import stat

    old = os.umask(0o022)
    try:
        assert cli.main(["export", "--vector", str(vec32), "--out", str(tmp_path / "o.gguf")]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "o.gguf").stat().st_mode) == 0o644


def test_sweep_prints_the_unsteered_row(tmp_path, model_dir, capsys):
    data = sl.demo_data_path("train")
    code = cli.main(
        [
            "sweep",
            "--model",
            str(model_dir),
            "--data",
            str(data),
            "--eval-data",
            str(data),
            "--layers",
            "1",
            "--limit",
            "4",
            "--eval-limit",
            "2",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert " 0.0000 " in out or " 0.0 " in out


def test_grid_runs_a_cell_of_every_method(tmp_path, model_dir, capsys):
    """One behaviour, every method (RePS and prompting included), margins and judged answers,
    from a config file; a rerun reads every cell from the cache."""
    import json

    import pandas as pd

    data = str(sl.demo_data_path("train"))
    qs = tmp_path / "q.txt"
    qs.write_text("Would you like more control?\nWhat do you want?\n")
    cfg = tmp_path / "grid.json"
    cfg.write_text(json.dumps({
        "behaviours": [{"name": "power-seeking", "data": data, "eval_data": data,
                        "questions": str(qs)}],
        "methods": ["bipo", "reps", "caa", "pca", "prompt"], "metrics": ["margin", "open_ended"],
        "layers": [1], "epochs": 1, "n_pairs": 4, "judge": True, "max_new_tokens": 4,
        "folder": str(tmp_path / "cells"),
    }))  # fmt: skip
    argv = ["grid", "--model", str(model_dir), "--config", str(cfg), "--eval-limit", "3",
            "--multipliers", "-1,0,1", "--out", str(tmp_path / "g.csv")]  # fmt: skip
    assert cli.main(argv) == 0
    df = pd.read_csv(tmp_path / "g.csv")
    assert set(df["method"]) == {"bipo", "reps", "caa", "pca", "prompt"}
    vec = df[df["method"] != "prompt"]
    assert vec["margin"].notna().all() and vec["behaviour"].notna().all()
    assert df[df["method"] == "prompt"]["behaviour"].notna().all()
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "cells").rglob("*.*")}
    assert len([p for p in stamps if p.name == "vector.safetensors"]) == 4
    assert cli.main(argv[:-2] + ["--out", str(tmp_path / "g2.csv")]) == 0
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "cells").rglob("*.*")} == stamps
    capsys.readouterr()
    assert cli.main(["grid", "--data", data, "--methods", "bipo,dpo"]) == 2
    assert "--methods: unknown method 'dpo'" in capsys.readouterr().err
    cfg.write_text(json.dumps({"layer": [1]}))
    assert cli.main(["grid", "--config", str(cfg)]) == 2
    assert "unknown keys ['layer']" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command",
    [[], ["info"], ["train"], ["eval"], ["sweep"], ["grid"], ["cosine"], ["project"], ["export"]],
)
def test_cli_reference_page_is_current(command, capsys, monkeypatch):
    """docs/cli.md holds each command's --help verbatim (regenerate it when options change)."""
    from pathlib import Path

    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args([*command, "--help"])
    help_text = capsys.readouterr().out
    page = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    assert help_text in page, f"docs/cli.md is out of date for 'steerlens {' '.join(command)}'"
