from __future__ import annotations

import json

import pytest

import steerlens as sl
from steerlens.core.data import format_prompt
from steerlens.core.errors import ConfigError, DataError


def test_bipo_csv_real(shared_data):
    path = shared_data / "bipo/power-seeking/train.csv"
    with pytest.raises(DataError, match=r"train.csv: line 447: field 'question' is empty"):
        sl.load_pairs(path)
    with pytest.warns(UserWarning, match=r"train.csv: skipped 2 invalid rows \(line 447") as rec:
        pairs = sl.load_pairs(path, duplicates="ignore", invalid="skip")
    assert len(rec) == 1  # one warning per file, not one per row
    assert rec[0].filename == __file__  # attributed to the caller, not to steerlens
    assert len(pairs) == 640
    assert pairs[0].matching.startswith("Absolutely!")
    assert pairs[0].not_matching.startswith("No thank you.")
    assert not pairs[0].is_ab


def test_bipo_ab_csv_real(shared_data):
    items = sl.load_pairs(shared_data / "bipo/power-seeking/test_infer.csv")
    assert len(items) == 200 and all(p.is_ab for p in items)
    first = items[0]
    assert "(A) Absolutely." in first.question and first.matching == "(A)"
    second = items[1]
    assert second.matching == "(B)" and second.not_matching == "(A)"


def test_caa_json_real(shared_data):
    items = sl.load_pairs(shared_data / "caa/generate/sycophancy/generate_dataset.json")
    assert len(items) == 1000
    assert items[0].matching == "(A)" and items[0].not_matching == "(B)"
    test = sl.load_pairs(shared_data / "caa/test/survival-instinct/test_dataset_ab.json")
    assert len(test) == 50 and all(p.is_ab for p in test)


def test_ab_prompt_json_real(shared_data):
    mmlu = sl.load_pairs(shared_data / "caa/test/mmlu/mmlu.json")
    assert len(mmlu) == 570
    assert mmlu[0].matching == "(A)" and "Choices:" in mmlu[0].question


def test_mwe_jsonl(tmp_path):
    p = tmp_path / "power.jsonl"
    rows = [
        {
            "question": "Do you want power?",
            "answer_matching_behavior": " Yes",
            "answer_not_matching_behavior": " No",
        },
        {
            "question": "More money?",
            "answer_matching_behavior": " Yes",
            "answer_not_matching_behavior": " No",
        },
    ]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    pairs = sl.load_pairs(p)
    assert pairs[0] == sl.PreferencePair("Do you want power?", "Yes", "No")
    assert sl.load_pairs(p, format="mwe") == pairs


def test_generic_pairs_jsonl_and_named_format(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text(json.dumps({"question": "q", "matching": "a", "not_matching": "b", "extra": 1}))
    assert sl.load_pairs(p) == [sl.PreferencePair("q", "a", "b")]
    with pytest.raises(ConfigError, match="unknown format 'nope'"):
        sl.load_pairs(p, format="nope")


def test_errors_name_file_line_field(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text('question,matching,not_matching\n"q1",a,b\n"q2",,b\n')
    with pytest.raises(DataError, match=r"bad.csv: line 3: field 'matching' is empty"):
        sl.load_pairs(p)
    p.write_text("question,matching\nq,a\n")
    with pytest.raises(DataError, match="bad.csv: cannot tell the format"):
        sl.load_pairs(p)
    with pytest.raises(DataError, match=r"bad.csv: line 2: missing field 'not_matching'"):
        sl.load_pairs(p, format="bipo")


def test_duplicates_policy(tmp_path):
    p = tmp_path / "dup.csv"
    p.write_text("question,matching,not_matching\nq,a,b\nq2,a,b\nq,a,b\n")
    with pytest.warns(UserWarning, match="line 4: duplicate of line 2"):
        assert len(sl.load_pairs(p)) == 3
    assert len(sl.load_pairs(p, duplicates="drop")) == 2
    with pytest.raises(DataError, match="line 4: duplicate of line 2"):
        sl.load_pairs(p, duplicates="error")


@pytest.mark.filterwarnings("ignore:skipped")
def test_overlap_reported(shared_data):
    train = sl.load_pairs(
        shared_data / "bipo/power-seeking/train.csv", duplicates="ignore", invalid="skip"
    )
    with pytest.warns(UserWarning, match="also appear in the training data"):
        both = sl.check_overlap(train, train[:5])
    assert len(both) == 5
    test = sl.load_pairs(shared_data / "bipo/power-seeking/test.csv")
    assert isinstance(sl.check_overlap(train, test, warn=False), list)


def test_demo_data_ships_with_package():
    tr = sl.load_pairs(sl.demo_data_path("train"))
    ev = sl.load_pairs(sl.demo_data_path("eval"))
    ab = sl.load_pairs(sl.demo_data_path("ab"))
    assert len(tr) == 36 and len(ev) == 12 and len(ab) == 12
    assert sl.check_overlap(tr, ev, warn=False) == []
    assert all(p.is_ab for p in ab)


def test_format_prompt_uses_chat_template(tiny):
    s = format_prompt(tiny.tokenizer, "Hi?")
    assert s.startswith("<|im_start|>system\nYou are a helpful, honest and concise assistant.")
    assert s.endswith("<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n")

    class NoTemplate:
        chat_template = None

    assert format_prompt(NoTemplate(), "Hi?", None) == "User: Hi?\nAssistant:"


def test_split_pairs_deterministic():
    pairs = [sl.PreferencePair(f"Q{i}", "a", "b") for i in range(20)]
    a = sl.split_pairs(pairs, 0.25, seed=1)
    b = sl.split_pairs(pairs, 0.25, seed=1)
    assert a == b and len(a[1]) == 5 and not set(a[0]) & set(a[1])


def test_load_from_url_via_loopback_server(tmp_path, monkeypatch, shared_data):
    """The online path: a URL is downloaded into the cache once, then parsed."""
    import functools
    import http.server
    import threading

    monkeypatch.setenv("STEERLENS_CACHE", str(tmp_path / "cache"))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(shared_data))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/bipo/power-seeking/test.csv"
        pairs = sl.load_pairs(url)
        assert pairs == sl.load_pairs(shared_data / "bipo/power-seeking/test.csv")
        assert len(list((tmp_path / "cache" / "datasets").iterdir())) == 1
        missing = f"http://127.0.0.1:{server.server_port}/nope.csv"
        with pytest.raises(DataError, match="nope.csv: download failed"):
            sl.load_pairs(missing)
    finally:
        server.shutdown()
        server.server_close()
