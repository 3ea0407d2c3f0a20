from __future__ import annotations

import pytest

import steerlens as sl
from steerlens.core.errors import ConfigError


@pytest.fixture(scope="module")
def data():
    items = sl.load_pairs(sl.demo_data_path("ab"))
    return items[:8], items[8:]


def test_sweep_shape_and_columns(tiny, data):
    train, ev = data
    df = sl.sweep_layers(
        tiny, train, ev, layers=[1, 2, -1], method="caa", multipliers=(-1, 0, 1), progress=False
    )
    assert len(df) == 3 * 3
    assert sorted(df["layer"].unique()) == [1, 2, 3]
    assert {
        "layer",
        "method",
        "multiplier",
        "score",
        "matching_likelier",
        "norm",
        "seconds",
    } <= set(df)
    base = df[df.multiplier == 0]["score"]
    assert base.nunique() == 1  # multiplier 0 is the unsteered model at every layer


def test_sweep_bipo_free_text_uses_margin(tiny):
    pairs = sl.load_pairs(sl.demo_data_path("train"))
    cfg = sl.BiPOConfig(epochs=1, lr=1e-2, warmup_steps=0, progress=False)
    df = sl.sweep_layers(
        tiny, pairs[:4], pairs[4:7], layers=[2], method="bipo", config=cfg, progress=False
    )
    assert {"margin", "matching_likelier"} <= set(df) and len(df) == 3
    assert df["multiplier"].tolist() == list(sl.DEFAULT_MULTIPLIERS)


def test_sweep_resumes_from_cache(tiny, data, tmp_path, monkeypatch):
    """sweep_layers runs on sweep_grid's cell cache: an interrupted sweep keeps its finished
    layers, and a rerun builds only the missing ones."""
    from steerlens.methods import registry

    train, ev = data
    calls = []
    real = registry.caa_vector

    def spy(model, pairs, **kw):
        calls.append(kw["layers"])
        if kw["layers"] == 2 and len(calls) == 2:
            raise KeyboardInterrupt
        return real(model, pairs, **kw)

    monkeypatch.setattr(registry, "caa_vector", spy)
    with pytest.raises(KeyboardInterrupt):
        sl.sweep_layers(
            tiny, train, ev, layers=[1, 2], method="caa", cache_dir=tmp_path, progress=False
        )
    done = [p.parent.name for p in tmp_path.glob("*/train.json")]
    assert len(done) == 1 and "__caa__L1__" in done[0]
    df = sl.sweep_layers(
        tiny, train, ev, layers=[1, 2], method="caa", cache_dir=tmp_path, progress=False
    )
    assert calls == [1, 2, 2]  # layer 1 came from the cache
    full = sl.sweep_layers(tiny, train, ev, layers=[1, 2], method="caa", progress=False)
    assert df[["layer", "multiplier", "score"]].equals(full[["layer", "multiplier", "score"]])
    # other settings never read the cached rows of this run
    other = sl.sweep_layers(
        tiny,
        train,
        ev,
        layers=[1],
        method="caa",
        multipliers=(2,),
        cache_dir=tmp_path,
        progress=False,
    )
    assert other["multiplier"].tolist() == [2.0]
    assert calls == [1, 2, 2, 1, 2]  # `full` (no cache) built two; `other` reused layer 1
    assert sl.active_hooks(tiny) == []


def test_callable_method_and_errors(tiny, data):
    train, ev = data

    def my_method(model, pairs, *, layers):
        return sl.caa_vector(model, pairs, layers=layers) * 2

    df = sl.sweep_layers(tiny, train, ev, layers=[1], method=my_method, progress=False)
    assert df["method"].iloc[0] == "my_method"
    with pytest.raises(ConfigError, match="method must be"):
        sl.sweep_layers(tiny, train, ev, layers=[1], method="nope", progress=False)


def test_score_vector_and_deprecated_names(tiny, data):
    from steerlens.core.compat import SteerlensDeprecationWarning

    train, ev = data
    v = sl.caa_vector(tiny, train, layers=1)
    df = sl.score_vector(tiny, v, ev, multipliers=(-2, 0, 2))
    assert df["multiplier"].tolist() == [-2.0, 0.0, 2.0]
    with pytest.warns(SteerlensDeprecationWarning, match="score_vector"):
        old = sl.sweep_multipliers(tiny, v, ev, multipliers=(-2, 0, 2))
    assert old.equals(df)
    with pytest.warns(SteerlensDeprecationWarning, match="'train_data=' is deprecated"):
        sl.sweep_layers(tiny, train_data=train, eval_pairs=ev, layers=[1], method="caa")
    with pytest.warns(SteerlensDeprecationWarning, match="by position"):
        sl.sweep_layers(tiny, train, ev, [1], "caa", (0,))
