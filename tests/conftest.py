"""Shared fixtures: tiny random models (fast) and the embedded SmolLM2 model (slow)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings
from threadpoolctl import threadpool_limits

import steerlens as sl

# CI machines are slow and shared: no per-example deadline, fixed derandomised examples.
settings.register_profile("steerlens", deadline=None, derandomize=True, print_blob=True)
settings.load_profile("steerlens")

# Under pytest-xdist each worker gets its share of the cores: torch's default (every core in
# every worker) oversubscribes them, which slowed one job tenfold on a 2-core machine.
# numpy's OpenBLAS (bootstraps, the judge's logistic regression) read the environment when
# numpy was imported, before this file ran: threadpoolctl limits its pool now. The notebooks'
# kernels (nbmake) and CLI subprocesses are child processes: they read the environment.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    torch.set_num_threads(_threads)
    threadpool_limits(_threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(_threads))
    os.environ.setdefault("MKL_NUM_THREADS", str(_threads))

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny():
    """A 4-layer random Llama-style bridge (d_model 64) with SmolLM2's tokenizer."""
    return sl.tiny_model(n_layers=4, d_model=64, seed=0)


@pytest.fixture(scope="session")
def smol():
    """The embedded SmolLM2-135M-Instruct bridge (loaded once per session)."""
    return sl.load_model()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"the real datasets are expected at {SHARED} (../shared/data beside the repo)")
    return SHARED


@pytest.fixture(scope="session")
def power_judge(shared_data):
    """The offline judge fit on every power-seeking training pair (fit once: about a minute of
    MiniLM on a CPU)."""
    pairs = sl.load_pairs(shared_data / "bipo/power-seeking/train.csv", invalid="skip")
    return sl.BehaviourJudge.fit(pairs)


@pytest.fixture(autouse=True)
def _no_hooks_left(request):
    """Every test must leave every model it used with no hooks attached."""
    yield
    for name in ("tiny", "smol"):
        if name in request.fixturenames:
            model = request.getfixturevalue(name)
            assert sl.active_hooks(model) == [], f"hooks left on {name}: {sl.active_hooks(model)}"


@pytest.fixture
def rand_vec():
    def make(model, layer=1, scale=1.0, seed=0):
        g = torch.Generator().manual_seed(seed)
        v = torch.randn(model.cfg.d_model, generator=g) * scale
        return sl.SteeringVector({f"blocks.{layer}.hook_resid_post": v})

    return make
