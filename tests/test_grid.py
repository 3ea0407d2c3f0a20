from __future__ import annotations

import io
import json
import os
import pickle
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor

import pandas as pd
import pytest
import torch

import steerlens as sl
from steerlens.core.models import model_spec
from steerlens.experiments.cache import find_cells, load_vector
from steerlens.experiments.vocabulary import Cell

NUMERIC = ["multiplier", "score", "margin", "matching_likelier", "norm"]


@pytest.fixture(scope="module")
def datasets():
    ab = sl.load_pairs(sl.demo_data_path("ab"))
    free = sl.load_pairs(sl.demo_data_path("train"))
    return {"ab": (ab[:6], ab[6:10]), "free": (free[:4], free[4:7])}


@pytest.fixture(scope="module")
def grid_model():
    return sl.tiny_model(n_layers=3, d_model=32, seed=1)


KW = dict(
    layers=[1, 2],
    methods=["caa", "bipo"],
    seeds=[0, 1],
    multipliers=(-1, 0, 1),
    config=sl.BiPOConfig(epochs=1, lr=1e-2, warmup_steps=0),
    progress=False,
)


def assert_same_table(a: pd.DataFrame, b: pd.DataFrame) -> None:
    keys = ["dataset", "method", "layer", "seed", "multiplier"]
    a, b = a.sort_values(keys).reset_index(drop=True), b.sort_values(keys).reset_index(drop=True)
    assert a[keys].equals(b[keys])
    for col in NUMERIC:
        if col in a:
            pd.testing.assert_series_equal(a[col], b[col], check_exact=False, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def serial(tmp_path_factory, grid_model, datasets):
    folder = tmp_path_factory.mktemp("serial")
    return sl.sweep_grid(grid_model, datasets, folder=folder, **KW), folder


def test_serial_table_and_saved_vectors(serial, grid_model):
    df, folder = serial
    # 2 datasets x (caa: 2 layers + bipo: 2 layers x 2 seeds) x 3 multipliers
    assert len(df) == 2 * (2 + 4) * 3
    assert {"dataset", "method", "layer", "seed", "seconds", "worker", "norm"} <= set(df)
    (cell,) = find_cells(folder, Cell("free", "bipo", 2, 1).key)
    v = load_vector(cell)
    assert v.metadata["seed"] == 1 and v.hook_names == ["blocks.2.hook_resid_post"]
    assert len(list(folder.iterdir())) == 12  # one folder per cell


def stamps(folder):
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*.*")}


def test_deleting_a_cell_folder_recomputes_that_cell_alone(serial, grid_model, datasets):
    import shutil

    df, folder = serial
    before = stamps(folder)
    (victim,) = find_cells(folder, Cell("ab", "bipo", 1, 1).key)
    shutil.rmtree(victim)
    again = sl.sweep_grid(grid_model, datasets, folder=folder, **KW)
    after = stamps(folder)
    assert sorted(after) == sorted(before)
    changed = sorted(k for k in after if before[k] != after[k])
    assert changed and all(k.startswith(victim.name + "/") for k in changed), changed
    assert_same_table(df, again)


def test_a_new_metric_reuses_the_trained_vectors(serial, grid_model, datasets):
    df, folder = serial
    before = stamps(folder)
    kl = sl.sweep_grid(grid_model, datasets, folder=folder, metric=["auto", "kl"], **KW)
    after = stamps(folder)
    added = sorted(set(after) - set(before))
    assert len(added) == 12 and all("/kl-" in k for k in added)
    assert all(after[k] == before[k] for k in before)  # no vector retrained, no score redone
    assert (kl.loc[kl["multiplier"] == 0, "kl"] == 0).all()
    assert (kl.loc[kl["multiplier"] != 0, "kl"] > 0).all()
    assert_same_table(df, kl)


def test_metric_files_record_their_vector_and_a_deleted_vector_recomputes(tmp_path, grid_model,
                                                                           datasets):  # fmt: skip
    """Every metric file records the hash of the vector its scores came from; deleting the vector
    rebuilds it and rescores, never keeping the old vector's scores."""
    from steerlens.experiments.cache import file_hash, made_by_kept_vector

    calls = []

    def noisy(model, pairs, *, layers):  # a method whose rebuilt vector differs
        calls.append(1)
        g = torch.Generator().manual_seed(len(calls))
        return sl.SteeringVector({f"blocks.{layers}.hook_resid_post": torch.randn(32, generator=g)})

    kw = dict(layers=[1], methods=[noisy], multipliers=(-1, 0, 1), progress=False, per_item=True)
    first = sl.sweep_grid(grid_model, {"free": datasets["free"]}, folder=tmp_path, **kw)
    (cell,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    (metric,) = cell.glob("margin-*.json")
    vec = cell / "vector.safetensors"
    assert json.loads(metric.read_text())["vector"] == file_hash(vec)
    assert made_by_kept_vector(metric, vec)
    again = sl.sweep_grid(grid_model, {"free": datasets["free"]}, folder=tmp_path, **kw)
    assert len(calls) == 1 and first["value"].tolist() == again["value"].tolist()
    vec.unlink()
    assert not made_by_kept_vector(metric, vec)
    third = sl.sweep_grid(grid_model, {"free": datasets["free"]}, folder=tmp_path, **kw)
    assert len(calls) == 2
    assert json.loads(metric.read_text())["vector"] == file_hash(vec)
    steered = third["multiplier"] != 0
    assert third.loc[steered, "value"].tolist() != first.loc[steered, "value"].tolist()
    assert made_by_kept_vector(metric, vec)
    legacy = {k: v for k, v in json.loads(metric.read_text()).items() if k != "vector"}
    metric.write_text(json.dumps(legacy))  # written before vectors were kept
    assert not made_by_kept_vector(metric, vec)


def test_a_rebuilt_vector_forgets_every_other_vectors_scores(tmp_path, grid_model, datasets):
    """A run that rebuilds a cell's vector for one metric deletes the folder's files of the other
    metrics too when they came from another vector or record none (written before vectors were
    kept): they are computed again when next asked for, never read beside the new vector."""
    from steerlens.experiments.cache import file_hash, forget_other_vectors

    b = sl.Behaviour("free", datasets["free"][0], datasets["free"][1], questions=["Hi?", "Why?"])
    kw = dict(layers=[1], methods=["caa"], multipliers=(-1, 0, 1), max_new_tokens=3,
              progress=False, per_item=True)  # fmt: skip
    answers = sl.sweep_grid(grid_model, {"free": b}, folder=tmp_path, metric="open_ended", **kw)
    (cell,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    (oe,) = cell.glob("open_ended-*.json")
    legacy = {k: v for k, v in json.loads(oe.read_text()).items() if k != "vector"}
    legacy["rows"][0]["text"] = "an answer another vector wrote"
    oe.write_text(json.dumps(legacy))  # answers kept from before vectors were kept
    (cell / "vector.safetensors").unlink()
    sl.sweep_grid(grid_model, {"free": b}, folder=tmp_path, metric="margin", **kw)
    assert not oe.exists()  # not asked for, yet forgotten: it came from no kept vector
    (margin,) = cell.glob("margin-*.json")
    assert json.loads(margin.read_text())["vector"] == file_hash(cell / "vector.safetensors")
    again = sl.sweep_grid(grid_model, {"free": b}, folder=tmp_path, metric="open_ended", **kw)
    assert json.loads(oe.read_text())["vector"] == file_hash(cell / "vector.safetensors")
    assert again["text"].tolist() == answers["text"].tolist()  # CAA rebuilt: same answers
    assert "an answer another vector wrote" not in again["text"].tolist()
    other = cell / "margin-0000000000.json"
    other.write_text(json.dumps({"rows": [], "vector": "another-vector"}))
    keep = cell / "judged-k-open_ended-x.json"
    keep.write_text("{}")
    gone = forget_other_vectors(cell, cell / "vector.safetensors")
    assert gone == [other] and keep.exists() and margin.exists() and oe.exists()


def test_judge_scores_are_read_from_the_cache_on_a_rerun(tmp_path, grid_model, datasets):
    class Counting:
        key = "counting-judge"
        seen = 0

        def __call__(self, texts):
            Counting.seen += len(texts)
            return [len(t) % 5 / 5 for t in texts]

    b = sl.Behaviour("free", datasets["free"][0], questions=["Hi?", "Why?"], judge=Counting())
    kw = dict(layers=[1], methods=["caa"], multipliers=(-1, 0, 1), metric="open_ended",
              max_new_tokens=3, progress=False, per_item=True)  # fmt: skip
    first = sl.sweep_grid(grid_model, {"free": b}, folder=tmp_path, **kw)
    assert Counting.seen == 6
    again = sl.sweep_grid(grid_model, {"free": b}, folder=tmp_path, **kw)
    assert Counting.seen == 6 and again["behaviour"].tolist() == first["behaviour"].tolist()
    (judged,) = tmp_path.glob("*/judged-counting-judge-*.json")
    saved = json.loads(judged.read_text())
    judged.write_text(json.dumps({**saved, "answers": "other answers"}))
    sl.sweep_grid(grid_model, {"free": b}, folder=tmp_path, **kw)
    assert Counting.seen == 12  # scores of other answers are never reused


def test_bad_cell_is_named_and_others_are_kept(tmp_path, grid_model, datasets):
    with pytest.raises(sl.SweepError, match=r"cell ab__caa__L7__s0: HookError") as err:
        sl.sweep_grid(
            grid_model, datasets, layers=[1, 7], methods=["caa"], folder=tmp_path, progress=False
        )
    assert set(err.value.failed) == {"ab__caa__L7__s0", "free__caa__L7__s0"}
    done = sorted(p.parent.name.split("-")[0] for p in tmp_path.glob("*/margin-*.json"))
    done += sorted(p.parent.name.split("-")[0] for p in tmp_path.glob("*/ab-*.json"))
    assert sorted(done) == ["ab__caa__L1__s0", "free__caa__L1__s0"]


class _NoModulePickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, torch.nn.Module):
            raise AssertionError(f"a {type(obj).__name__} was about to be sent to a worker")
        return None


class CheckingExecutor:
    """A ProcessPoolExecutor that first proves no model object is in what it sends."""

    def __init__(self, pool):
        self.pool = pool
        self.sent = 0

    def submit(self, fn, *args, **kwargs):
        _NoModulePickler(io.BytesIO()).dump((fn, args, kwargs))
        self.sent += 1
        return self.pool.submit(fn, *args, **kwargs)


def test_process_pool_equals_serial_and_never_pickles_the_model(
    serial, tmp_path, grid_model, datasets
):
    import multiprocessing

    with pytest.raises(AssertionError, match="TransformerBridge"):
        _NoModulePickler(io.BytesIO()).dump(grid_model)  # the check does catch a model
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=ctx) as pool:
        ex = CheckingExecutor(pool)
        df = sl.sweep_grid(grid_model, datasets, folder=tmp_path, executor=ex, **KW)
    assert ex.sent == 12
    assert df["worker"].nunique() >= 1 and not df["worker"].str.endswith(f":{os.getpid()}").any()
    assert_same_table(serial[0], df)


def test_dask_cluster_with_a_worker_killed_mid_sweep(serial, tmp_path, grid_model, datasets):
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=50,
    )
    client = distributed.Client(cluster)
    try:
        result = {}
        run = threading.Thread(
            target=lambda: result.update(
                df=sl.sweep_grid(grid_model, datasets, folder=tmp_path, executor=client, **KW)
            )
        )
        run.start()
        killed = None
        deadline = time.time() + 300
        while killed is None and time.time() < deadline and run.is_alive():
            busy = [w for w, tasks in client.processing().items() if tasks]
            if busy:
                pids = client.run(os.getpid, workers=busy[:1])
                killed = next(iter(pids.values()))
                os.kill(killed, signal.SIGKILL)
            time.sleep(0.05)
        run.join(timeout=600)
        assert killed is not None, "no worker was busy to kill"
        assert "df" in result, "the sweep did not finish after a worker was killed"
        df = result["df"]
        assert_same_table(serial[0], df)
        assert killed not in {int(w.split(":")[1]) for w in df["worker"]}
        # a rerun finds every cell on disk and computes nothing
        before = stamps(tmp_path)
        again = sl.sweep_grid(grid_model, datasets, folder=tmp_path, executor=client, **KW)
        assert stamps(tmp_path) == before
        assert_same_table(df, again)
        # vectors equal the serial run's (the same cell folders: names hash data and recipe)
        for p in tmp_path.glob("*/vector.safetensors"):
            a = sl.SteeringVector.load(p)
            b = sl.SteeringVector.load(serial[1] / p.relative_to(tmp_path))
            assert a.allclose(b, atol=1e-6), p
        assert json.loads(next(tmp_path.glob("*/train.json")).read_text())["seconds"] > 0
    finally:
        client.close()
        cluster.close()


def test_model_spec_round_trip(grid_model):
    spec = grid_model.steerlens_spec
    assert pickle.loads(pickle.dumps(spec)) == spec
    again = spec.load()
    assert torch.equal(next(again.parameters()), next(grid_model.parameters()))
    with pytest.raises(sl.ConfigError, match="no loading spec"):
        model_spec(object())
