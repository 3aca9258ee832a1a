"""FLOW against uniform N:M on SmolLM2-135M: calibration, pruning, quality and the macro.

The experiment of the issue "FLOW: per-layer N:M selection from outliers, on real transformer
weights". ``python -m sparsecim.sw.experiments.flow_eval`` runs it and writes
``build/flow/report.json`` and ``build/flow/report.md``; every step is also a function over a
:class:`SmolLM`.

Pipeline (each step follows the released FLOW code, FLOW-open-project/FLOW):

1. **Data.** Calibration and evaluation windows from disjoint Wikipedia texts
   (:func:`~sparsecim.sw.textdata.calibration_and_evaluation_windows`, ``<|endoftext|>``
   between documents, fixed seed).
2. **FLOW statistics** (:func:`flow_statistics`), a first pass over the **dense** model: the
   calibration hidden states run through the unpruned blocks; for each block the Wanda scores
   ``|W| · sqrt(mean_t x²)`` of its seven linears (q, k, v, o, gate, up, down, in that order,
   flattened and concatenated) give the block's outlier ratio and locality. The released
   ``sw/solver/solver.py`` (``solver_main``) does exactly this: it never prunes, and each
   layer's output is recomputed with the dense layer before it feeds the next.
3. **Pattern selection**: :func:`sparsecim.sw.flow.select_patterns` (the integer program).
4. **Calibration and pruning** (:func:`calibrate_and_prune`), a second pass, as Wanda's
   ``prune_wanda`` (which the released ``main.py --prune_method from_file`` builds on): the
   calibration hidden states flow through the **already pruned** blocks; for block ``i`` the
   inputs of all seven linears are captured in one forward pass with the block still dense,
   their activation norms taken, every linear pruned with the block's pattern (per output
   channel, the ``n`` best Wanda scores of every group of ``m`` inputs), and the calibration
   states propagated through the pruned block.
5. **Quality** (:func:`layer_errors`, :func:`~sparsecim.sw.smollm.perplexity`): perplexity
   on the evaluation windows, and per linear the relative output error on held-out tokens.
6. **Hardware** (:func:`hardware_costs`, :func:`int8_layer_check`): every linear mapped onto a
   macro preset in its pattern (``n == m`` runs dense), cycle-model cycles per token and INT8
   weight memory; one pruned layer slice quantized to INT8, run on the golden model and
   compared exactly with the integer reference.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...hw.config import MacroConfig, preset, resolve_macro
from .. import flow
from ..markdown import bullets, markdown_table
from ..nm import NMPattern, check_nm, memory_bits, prune_by_score, wanda_scores
from ..pipeline import run_layer, tiled_layer
from ..quant import dequantize_matmul, quantize_acts, quantize_weights
from ..schedule import as_pattern, predict_counters
from ..smollm import LINEAR_NAMES, SmolLM, load_smollm2, perplexity
from ..textdata import calibration_and_evaluation_windows

__all__ = [
    "BlockError",
    "Int8Check",
    "PruneResult",
    "calibrate_and_prune",
    "flow_statistics",
    "flow_statistics_by_threshold",
    "flow_variants",
    "hardware_costs",
    "int8_layer_check",
    "layer_errors",
    "layer_inputs",
    "main",
    "run_experiment",
    "sparsity_summary",
    "write_report",
]

Progress = Callable[[str], None] | None


def _say(progress: Progress, message: str) -> None:
    if progress is not None:
        progress(message)


def _check_windows(model: SmolLM, windows, name: str) -> np.ndarray:
    arr = np.asarray(windows)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty (n_windows, seq) array, not an array of "
                         f"shape {arr.shape}")
    return model.check_tokens(arr)


def _check_batch_size(batch_size) -> int:
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}")
    return int(batch_size)


def _block_patterns(model: SmolLM, patterns) -> list[NMPattern]:
    """One :class:`NMPattern` per block from a pattern, a sequence or a plan with ``.patterns``."""
    if isinstance(patterns, NMPattern):
        return [patterns] * model.num_blocks
    patterns = getattr(patterns, "patterns", patterns)
    if isinstance(patterns, str) or not isinstance(patterns, Sequence):
        raise ValueError(f"patterns must be an NMPattern, a sequence of them or a plan with "
                         f".patterns, not {patterns!r}")
    patterns = list(patterns)
    if len(patterns) != model.num_blocks:
        raise ValueError(f"patterns must give one pattern for each of the {model.num_blocks} "
                         f"blocks, not {len(patterns)}")
    for index, pattern in enumerate(patterns):
        if not isinstance(pattern, NMPattern):
            raise ValueError(f"patterns[{index}] must be an NMPattern, not {pattern!r}")
    return patterns


def _block_norms(model: SmolLM, index: int, hidden: np.ndarray, batch_size: int
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Run block ``index`` (current weights) over ``hidden`` in batches: its output and the
    RMS activation norm ``sqrt(mean_t x²)`` of every linear's input over all tokens."""
    out = np.empty_like(hidden)
    sums: dict[str, np.ndarray] = {}
    tokens = 0
    for start in range(0, hidden.shape[0], batch_size):
        batch = slice(start, start + batch_size)
        out[batch], inputs = model.block_linear_inputs(index, hidden[batch])
        tokens += inputs["q"].shape[0]
        seen: dict[int, str] = {}
        for name in LINEAR_NAMES:
            x = inputs[name]
            # q/k/v (and gate/up) share one input array: square it once.
            if id(x) in seen:
                continue
            seen[id(x)] = name
            square_sum = np.square(x, dtype=np.float64).sum(axis=0)
            sums[name] = sums[name] + square_sum if name in sums else square_sum
    norms = {name: np.sqrt(total / tokens) for name, total in sums.items()}
    for name, source in (("k", "q"), ("v", "q"), ("up", "gate")):
        norms.setdefault(name, norms[source])
    return out, norms


# --------------------------------------------------------------------------------------------
# Calibration: FLOW statistics (dense pass) and pruning (sequential pass)


@dataclass
class PruneResult:
    """A model pruned block by block, with what the calibration saw.

    Attributes
    ----------
    model : SmolLM
        A new model; the input model is unchanged. Each block's seven linears obey its pattern.
    patterns : list of NMPattern
        The pattern of each block.
    act_norms : list of dict
        Per block, the ``(in_features,)`` float64 RMS activation norm of each linear's input
        (``sqrt(mean_t x²)`` over all calibration tokens) that scored its weights; the inputs
        come from the already pruned blocks before it.
    calib_tokens : int
        Calibration tokens, windows × sequence length.
    seconds : float
        Wall time of the pass.
    """

    model: SmolLM
    patterns: list[NMPattern]
    act_norms: list[dict[str, np.ndarray]]
    calib_tokens: int
    seconds: float


def calibrate_and_prune(model: SmolLM, calib_windows, patterns, *, batch_size: int = 8,
                        progress: Progress = None) -> PruneResult:
    """Prune every linear of every block with Wanda N:M, calibrating block by block.

    As Wanda's ``prune_wanda``: the calibration hidden states start as the embeddings of
    ``calib_windows``; for block ``i``, one forward pass with the block still dense captures
    the inputs of all seven linears, their RMS norms score the weights
    (:func:`~sparsecim.sw.nm.wanda_scores`), each linear keeps, per output channel and group of
    ``m`` inputs, the ``n`` best scores (:func:`~sparsecim.sw.nm.prune_by_score`), and the
    hidden states are then propagated through the **pruned** block to calibrate block
    ``i + 1``. A block with a dense pattern (``n == m``) keeps its weights (the very arrays)
    and its captured output is propagated as is.

    Parameters
    ----------
    model : SmolLM
        The model to prune (left unchanged).
    calib_windows : array_like
        ``(n_windows, seq)`` token ids, each window an independent sequence.
    patterns : NMPattern, sequence of NMPattern, or plan
        One pattern for all blocks, one per block, or an object with a ``patterns`` list (a
        :class:`sparsecim.sw.flow.FlowPlan`).
    batch_size : int
        Windows run together (memory against speed; the result does not depend on it beyond
        float rounding).
    progress : callable, optional
        Called with a line of text after each block.

    Returns
    -------
    PruneResult

    Raises
    ------
    ValueError
        If the windows are not valid token ids, ``patterns`` does not give one
        :class:`NMPattern` per block, or ``batch_size`` is not a positive integer.
    """
    start = time.perf_counter()
    windows = _check_windows(model, calib_windows, "calib_windows")
    patterns = _block_patterns(model, patterns)
    batch_size = _check_batch_size(batch_size)
    pruned = model.with_linears({})
    hidden = pruned.embed(windows)
    all_norms = []
    for index, pattern in enumerate(patterns):
        out, norms = _block_norms(pruned, index, hidden, batch_size)
        all_norms.append(norms)
        if pattern.is_dense:
            hidden = out
        else:
            for name in LINEAR_NAMES:
                w = pruned.blocks[index].linears[name]
                pruned.set_linear(index, name,
                                  prune_by_score(w, wanda_scores(w, norms[name]), pattern))
            for batch in range(0, hidden.shape[0], batch_size):
                part = slice(batch, batch + batch_size)
                out[part] = pruned.block_forward(index, hidden[part])
            hidden = out
        _say(progress, f"  block {index:2d} {pattern!s:>5} "
                       f"{'kept dense' if pattern.is_dense else 'pruned'}")
    return PruneResult(pruned, patterns, all_norms, int(windows.size),
                       time.perf_counter() - start)


def flow_statistics(model: SmolLM, calib_windows, *, hyper_m: float,
                    subset_size: int = 10_000, batch_size: int = 8,
                    progress: Progress = None) -> list:
    """FLOW's outlier ratio and locality of every block, from a pass over the dense model.

    As the released solver (``sw/solver/solver.py``, ``solver_main``): the calibration hidden
    states flow through the **dense** blocks; block ``i``'s Wanda scores ``|W| · sqrt(mean_t
    x²)`` of q, k, v, o, gate, up, down (each ``(out, in)`` matrix flattened row-major, the
    seven concatenated in that order) go to :func:`sparsecim.sw.flow.block_outlier_stats`.
    The RMS norm differs from Wanda's ``sqrt(sum_t x² / n_windows)`` by a constant factor,
    which changes neither the outlier ratio (a threshold relative to the mean) nor the
    positions of the outliers.

    Parameters
    ----------
    model : SmolLM
        The dense model (left unchanged).
    calib_windows : array_like
        ``(n_windows, seq)`` token ids.
    hyper_m : float
        Outlier threshold as a multiple of the block's mean score (the released ``Hyper_m``).
    subset_size : int
        Outliers, in flattened order, whose pairwise distances give the locality.
    batch_size : int
        Windows run together.
    progress : callable, optional
        Called with a line of text after each block.

    Returns
    -------
    list of sparsecim.sw.flow.OutlierStats
        One per block.

    Raises
    ------
    ValueError
        If the windows or ``batch_size`` are invalid, or as
        :func:`sparsecim.sw.flow.block_outlier_stats`.
    """
    return flow_statistics_by_threshold(model, calib_windows, [hyper_m],
                                        subset_size=subset_size, batch_size=batch_size,
                                        progress=progress)[hyper_m]


def flow_statistics_by_threshold(model: SmolLM, calib_windows, hyper_ms: Sequence[float], *,
                                 subset_size: int = 10_000, batch_size: int = 8,
                                 progress: Progress = None) -> dict:
    """:func:`flow_statistics` for several thresholds from one dense pass.

    Returns
    -------
    dict of float to list of sparsecim.sw.flow.OutlierStats
        Per ``hyper_m`` (as given), one entry per block.

    Raises
    ------
    ValueError
        As :func:`flow_statistics`.
    """
    windows = _check_windows(model, calib_windows, "calib_windows")
    batch_size = _check_batch_size(batch_size)
    hidden = model.embed(windows)
    stats: dict = {h: [] for h in hyper_ms}
    for index in range(model.num_blocks):
        hidden, norms = _block_norms(model, index, hidden, batch_size)
        linears = model.blocks[index].linears
        scores = np.concatenate([wanda_scores(linears[name], norms[name]).ravel()
                                 for name in LINEAR_NAMES])
        for h in hyper_ms:
            stats[h].append(flow.block_outlier_stats(scores, h, subset_size=subset_size))
            _say(progress, f"  block {index:2d} Hyper_m {h:g}: outlier ratio "
                           f"{stats[h][-1].ratio:.3f} %, locality {stats[h][-1].locality:.3g}")
    return stats


# --------------------------------------------------------------------------------------------
# Quality


def layer_inputs(model: SmolLM, index: int, windows) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Inputs of block ``index``'s linears on ``windows``, the model's own blocks before it.

    Returns what :meth:`SmolLM.block_linear_inputs` returns for block ``index`` after running
    blocks ``0 .. index - 1`` (with their current weights) on the embeddings of ``windows``.

    Raises
    ------
    ValueError
        If ``index`` is not a block of ``model`` or the windows are not valid token ids.
    """
    if not isinstance(index, (int, np.integer)) or isinstance(index, bool) \
            or not 0 <= index < model.num_blocks:
        raise ValueError(f"block index must be an integer from 0 to {model.num_blocks - 1}, "
                         f"not {index!r}")
    hidden = model.embed(_check_windows(model, windows, "windows"))
    for before in range(int(index)):
        hidden = model.block_forward(before, hidden)
    return model.block_linear_inputs(int(index), hidden)


@dataclass
class BlockError:
    """Relative output errors of one block of a pruned model against the dense model.

    Every error is ``‖Y − Y_dense‖_F / ‖Y_dense‖_F`` over the held-out tokens.

    Attributes
    ----------
    local : dict[str, float]
        Per linear, the pruning error alone: the dense model's input ``X`` through the pruned
        weights, ``Y = X W_pruned^T`` against ``X W^T``.
    propagated : dict[str, float]
        Per linear, the error in the pruned model: its own input (shaped by every pruned block
        before) through its pruned weights.
    local_block, propagated_block : float
        The same over the seven linears together, ``sqrt(Σ‖ΔY‖² / Σ‖Y_dense‖²)``.
    hidden : float
        The block's output hidden state.
    """

    local: dict[str, float]
    propagated: dict[str, float]
    local_block: float
    propagated_block: float
    hidden: float

    def to_dict(self) -> dict:
        """Plain JSON-ready dict of the fields."""
        return {"local": self.local, "propagated": self.propagated,
                "local_block": self.local_block, "propagated_block": self.propagated_block,
                "hidden": self.hidden}


def _relative(diff_sq: float, ref_sq: float) -> float:
    return float(np.sqrt(diff_sq / ref_sq)) if ref_sq > 0 else float(diff_sq > 0)


def layer_errors(dense: SmolLM, models: Mapping[str, SmolLM], windows
                 ) -> dict[str, list[BlockError]]:
    """Per-block, per-linear relative output errors of pruned models on held-out tokens.

    The dense model and every pruned model run side by side over ``windows``, block by block;
    see :class:`BlockError` for what is compared.

    Parameters
    ----------
    dense : SmolLM
        The reference model.
    models : mapping of str to SmolLM
        Pruned models with the dense model's shapes and block count.
    windows : array_like
        ``(n_windows, seq)`` held-out token ids (all run as one batch: keep them few).

    Returns
    -------
    dict of str to list of BlockError
        One list per model name, one entry per block.

    Raises
    ------
    ValueError
        If the windows are invalid or a model's block count differs from the dense one's.
    """
    windows = _check_windows(dense, windows, "windows")
    for name, model in models.items():
        if model.num_blocks != dense.num_blocks:
            raise ValueError(f"model {name!r} must have {dense.num_blocks} blocks like the "
                             f"dense model, not {model.num_blocks}")
    hidden_dense = dense.embed(windows)
    hidden = {name: hidden_dense for name in models}
    errors: dict[str, list[BlockError]] = {name: [] for name in models}
    for index in range(dense.num_blocks):
        out_dense, x_dense = dense.block_linear_inputs(index, hidden_dense)
        w_dense = dense.blocks[index].linears
        y_dense = {n: x_dense[n] @ w_dense[n].T for n in LINEAR_NAMES}
        ref_sq = {n: float(np.sum(np.square(y_dense[n], dtype=np.float64)))
                  for n in LINEAR_NAMES}
        for name, model in models.items():
            out, x = model.block_linear_inputs(index, hidden[name])
            w = model.blocks[index].linears
            local_sq, prop_sq = {}, {}
            for n in LINEAR_NAMES:
                delta = x_dense[n] @ (w[n] - w_dense[n]).T
                local_sq[n] = float(np.sum(np.square(delta, dtype=np.float64)))
                prop = x[n] @ w[n].T - y_dense[n]
                prop_sq[n] = float(np.sum(np.square(prop, dtype=np.float64)))
            total_ref = sum(ref_sq.values())
            errors[name].append(BlockError(
                local={n: _relative(local_sq[n], ref_sq[n]) for n in LINEAR_NAMES},
                propagated={n: _relative(prop_sq[n], ref_sq[n]) for n in LINEAR_NAMES},
                local_block=_relative(sum(local_sq.values()), total_ref),
                propagated_block=_relative(sum(prop_sq.values()), total_ref),
                hidden=_relative(float(np.sum(np.square(out - out_dense, dtype=np.float64))),
                                 float(np.sum(np.square(out_dense, dtype=np.float64))))))
            hidden[name] = out
        hidden_dense = out_dense
    return errors


def sparsity_summary(model: SmolLM, patterns: Sequence[NMPattern]) -> dict:
    """How sparse a pruned model is, by pattern and by count of zero weights.

    Returns
    -------
    dict
        ``block_mean``: mean of the blocks' pattern sparsities (the quantity FLOW's constraint
        fixes); ``by_parameters``: pattern sparsity weighted by each linear's weight count;
        ``zero_fraction``: zero weights over all linear weights, as stored (a group may hold
        fewer than ``n`` non-zeros if kept weights were already zero); ``linear_parameters``
        and ``all_parameters`` (linears, embedding, norms: the dense rest of the model);
        ``zero_fraction_all``: zero linear weights over all parameters.
    """
    patterns = _block_patterns(model, list(patterns))
    total = pattern_pruned = zeros = 0
    for block, pattern in zip(model.blocks, patterns, strict=True):
        for w in block.linears.values():
            total += w.size
            pattern_pruned += w.size * pattern.sparsity
            zeros += int(w.size - np.count_nonzero(w))
    rest = model.embedding.size + model.final_norm.size + sum(
        b.attn_norm.size + b.ffn_norm.size for b in model.blocks)
    if model.lm_head is not model.embedding:
        rest += model.lm_head.size
    return {"block_mean": float(np.mean([p.sparsity for p in patterns])),
            "by_parameters": pattern_pruned / total, "zero_fraction": zeros / total,
            "linear_parameters": total, "all_parameters": total + rest,
            "zero_fraction_all": zeros / (total + rest)}


# --------------------------------------------------------------------------------------------
# Hardware


def hardware_costs(model: SmolLM, patterns: Sequence[NMPattern], cfg: MacroConfig, *,
                   tokens: int = 1) -> dict:
    """Map every linear onto ``cfg`` in its block's pattern: cycles and INT8 weight memory.

    Cycles are the cycle model's ``total`` (:func:`~sparsecim.sw.schedule.predict_counters`)
    for ``tokens`` tokens through a ``(in_features → out_features)`` layer, the same for every
    block with that pattern; weight memory is :func:`~sparsecim.sw.nm.memory_bits` with 8-bit
    values (values plus position metadata for sparse patterns). A pattern with ``n == m``
    (4:4, 8:8) runs as dense.

    Returns
    -------
    dict
        ``blocks``: per block ``{"pattern", "macro_pattern", "cycles", "weight_bits",
        "linears": {name: {"cycles", "weight_bits"}}}``; ``cycles`` and ``dense_cycles`` for
        the whole model, ``speedup`` (dense / this), ``weight_bits``, ``dense_weight_bits``,
        ``tokens`` and ``preset`` (the config's slug).

    Raises
    ------
    ValueError
        If a pattern is not supported by ``cfg``, or as
        :func:`~sparsecim.sw.schedule.predict_counters`.
    """
    patterns = _block_patterns(model, list(patterns))
    cache: dict[tuple, int] = {}

    def cycles(k: int, n: int, pattern: tuple[int, int]) -> int:
        key = (k, n, pattern)
        if key not in cache:
            cache[key] = predict_counters(cfg, k, n, tokens, pattern)["total"]
        return cache[key]

    blocks, total, dense_total, bits, dense_bits = [], 0, 0, 0, 0
    for index, (block, pattern) in enumerate(zip(model.blocks, patterns, strict=True)):
        macro = as_pattern(pattern)
        if not cfg.supports(*macro):
            raise ValueError(f"block {index} pattern {pattern} is not supported by the macro; "
                             f"supported are dense and {cfg.pattern_names()}")
        linears = {}
        for name in LINEAR_NAMES:
            n_out, k_in = block.linears[name].shape
            linears[name] = {"cycles": cycles(k_in, n_out, macro),
                             "weight_bits": memory_bits(n_out, k_in, pattern)["total"]}
            dense_total += cycles(k_in, n_out, (1, 1))
            dense_bits += memory_bits(n_out, k_in, NMPattern(1, 1))["total"]
        block_cycles = sum(v["cycles"] for v in linears.values())
        block_bits = sum(v["weight_bits"] for v in linears.values())
        total += block_cycles
        bits += block_bits
        blocks.append({"pattern": str(pattern),
                       "macro_pattern": str(NMPattern(*macro)),
                       "cycles": block_cycles, "weight_bits": block_bits, "linears": linears})
    return {"preset": cfg.slug, "tokens": int(tokens), "cycles": total, "dense_cycles": dense_total,
            "speedup": dense_total / total, "weight_bits": bits, "dense_weight_bits": dense_bits,
            "blocks": blocks}


@dataclass
class Int8Check:
    """One pruned layer slice run in INT8 on the golden model (see :func:`int8_layer_check`).

    Attributes
    ----------
    pattern : str
        The layer's pattern as pruned (``"4:4"`` runs as dense).
    rows, k, tokens : int
        Output channels, inputs and tokens of the slice.
    exact : bool
        Whether the golden model's integer outputs equal
        :func:`~sparsecim.sw.reference.matmul_reference` on the INT8 operands, every entry.
    cycles, predicted_cycles : int
        The golden model's cycle count and the cycle model's prediction for the shape.
    dequant_error : float
        ``‖y_int8 − y_float‖_F / ‖y_float‖_F``: dequantized INT8 outputs against the float
        layer (pruned float weights, float inputs).
    weight_zeros_added : int
        Kept (non-zero) weights that rounded to 0 in INT8 (their groups become under-full).
    schedule : Schedule
        The trace and its read-back, e.g. to run on the RTL (not part of :meth:`to_dict`).
    """

    pattern: str
    rows: int
    k: int
    tokens: int
    exact: bool
    cycles: int
    predicted_cycles: int
    dequant_error: float
    weight_zeros_added: int
    schedule: object = field(repr=False)

    def to_dict(self) -> dict:
        """Plain JSON-ready dict of every field but ``schedule``."""
        return {"pattern": self.pattern, "rows": self.rows, "k": self.k, "tokens": self.tokens,
                "exact": self.exact, "cycles": self.cycles,
                "predicted_cycles": self.predicted_cycles, "dequant_error": self.dequant_error,
                "weight_zeros_added": self.weight_zeros_added}


def int8_layer_check(cfg: MacroConfig, weights, inputs, pattern: NMPattern, *,
                     rows: int | None = 64, tokens: int = 4, per_token: bool = False
                     ) -> Int8Check:
    """Quantize a pruned layer slice to INT8, run it on the golden model, check it exactly.

    The first ``rows`` output channels of ``weights`` are quantized per channel and the first
    ``tokens`` rows of ``inputs`` per tensor (or per token) with
    :mod:`~sparsecim.sw.quant`; the quantized weights still obey ``pattern``. The layer is
    scheduled on ``cfg`` in ``pattern`` (``w = q_w.T``), run on the golden model, and its
    integer outputs compared with the integer reference; the dequantized outputs are compared
    with the float layer.

    Parameters
    ----------
    cfg : MacroConfig
    weights : array_like
        ``(out_features, in_features)`` float weights obeying ``pattern``.
    inputs : array_like
        ``(tokens, in_features)`` float activations.
    pattern : NMPattern
    rows : int or None
        Output channels kept (all if ``None``).
    tokens : int
        Input rows kept.
    per_token : bool
        Activation scale per token instead of per tensor.

    Returns
    -------
    Int8Check

    Raises
    ------
    NMPatternError
        If ``weights`` breaks ``pattern``.
    ValueError
        If shapes do not match, ``rows`` or ``tokens`` is not a positive integer, or the macro
        does not support the pattern.
    """
    weights = np.asarray(weights)
    inputs = np.asarray(inputs)
    for name, value in (("rows", rows), ("tokens", tokens)):
        if value is None and name == "rows":
            continue
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    if weights.ndim != 2 or inputs.ndim != 2 or weights.shape[1] != inputs.shape[1]:
        raise ValueError(f"weights (out, K) and inputs (tokens, K) must share K, not "
                         f"{weights.shape} and {inputs.shape}")
    check_nm(weights, pattern)
    w = weights[:rows].astype(np.float64)
    x = inputs[:tokens].astype(np.float64)
    q_w, s_w = quantize_weights(w)
    q_x, s_x = quantize_acts(x, per_token=per_token)
    checked = run_layer(tiled_layer(cfg, q_x, q_w.T, pattern))
    y_float = x @ w.T
    error = np.linalg.norm(dequantize_matmul(checked.outputs, s_x, s_w) - y_float)
    reference = np.linalg.norm(y_float)
    return Int8Check(
        pattern=str(pattern), rows=int(w.shape[0]), k=int(w.shape[1]), tokens=int(x.shape[0]),
        exact=checked.match, cycles=int(checked.golden.counters["total"]),
        predicted_cycles=int(predict_counters(cfg, w.shape[1], w.shape[0], x.shape[0],
                                              pattern)["total"]),
        dequant_error=float(error / reference) if reference > 0 else float(error > 0),
        weight_zeros_added=int(np.count_nonzero((w != 0) & (q_w == 0))),
        schedule=checked.mapped.schedule)


# --------------------------------------------------------------------------------------------
# The experiment


def _plan_dict(plan) -> dict:
    """A plan's fields as JSON values (patterns as text, anything else unknown as repr)."""
    if dataclasses.is_dataclass(plan):
        items = {f.name: getattr(plan, f.name) for f in dataclasses.fields(plan)}
    else:
        items = dict(vars(plan))
    fields = {}
    for key, value in items.items():
        if key == "patterns":
            value = [str(p) for p in value]
        elif isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, (list, tuple)):
            value = [str(v) if isinstance(v, NMPattern) else v for v in value]
        try:
            json.dumps(value)
        except TypeError:
            value = repr(value)
        fields[key] = value
    return fields


def run_experiment(model: SmolLM, calib_windows, eval_windows, *, target: float = 0.5,
                   flow_options: Mapping[str, Mapping] | None = None,
                   hyper_m: float | None = None, subset_size: int = 10_000,
                   n_error_windows: int = 8, batch_size: int = 8, cfg: MacroConfig | None = None,
                   hw_tokens: int = 1, int8_rows: int | None = None, int8_tokens: int = 4,
                   uniform: Sequence[str] = ("2:4", "4:8"), progress: Progress = None) -> dict:
    """Dense, uniform N:M and FLOW on one model: prune, measure, map; a JSON-ready report.

    Parameters
    ----------
    model : SmolLM
        The dense model (left unchanged).
    calib_windows, eval_windows : array_like
        ``(n, seq)`` token ids from disjoint texts.
    target : float
        FLOW's mean block sparsity.
    flow_options : mapping, optional
        FLOW variants to run, ``{name: keyword arguments of flow.select_patterns}``, plus an
        optional ``"hyper_m"`` key (the variant's own outlier threshold; all thresholds come
        from one dense statistics pass); by default ``{"flow": {}}`` (the released settings).
        Variants that choose the same patterns share one pruning pass.
    hyper_m, subset_size : float, int
        Outlier statistics settings (``hyper_m`` defaults to the flow module's released value).
    n_error_windows : int
        Evaluation windows for the per-layer errors.
    batch_size : int
        Windows run together.
    cfg : MacroConfig, optional
        The macro; ``preset("flexcim")`` by default.
    hw_tokens : int
        Tokens for the per-token cycle figures.
    int8_rows, int8_tokens : int
        Slice of the INT8 golden check (see :func:`int8_layer_check`); every output channel
        by default (a whole layer takes about 0.2 s on the golden model).
    uniform : sequence of str
        Uniform patterns to compare, by name.
    progress : callable, optional
        Called with lines of text as the run goes.

    Returns
    -------
    dict
        ``protocol``, ``flow`` (hyperparameters, statistics and plans) and ``configs``: per
        configuration its ``patterns``, ``sparsity`` (:func:`sparsity_summary`),
        ``perplexity``, ``errors`` (per block, :class:`BlockError` as dicts), ``hardware``
        (:func:`hardware_costs`), ``int8`` (one :func:`int8_layer_check` per linear of the
        first sparse block, or of block 0); ``timings`` in seconds per step.
    """
    cfg = preset("flexcim") if cfg is None else cfg
    hyper_m = flow.DEFAULT_HYPER_M if hyper_m is None else hyper_m
    flow_options = {"flow": {}} if flow_options is None else dict(flow_options)
    calib = _check_windows(model, calib_windows, "calib_windows")
    evaluation = _check_windows(model, eval_windows, "eval_windows")
    timings: dict[str, float] = {}

    def timed(key: str, fn, *args, **kwargs):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - start
        return result

    configs: dict[str, dict] = {"dense": {"patterns": [NMPattern(1, 1)] * model.num_blocks,
                                          "model": model}}
    for name in uniform:
        _say(progress, f"uniform {name}: calibrating and pruning")
        result = timed(f"prune {name}", calibrate_and_prune, model, calib,
                       NMPattern.parse(name), batch_size=batch_size, progress=progress)
        configs[name] = {"patterns": result.patterns, "model": result.model}

    flow_report: dict = {"hyper_m": hyper_m, "subset_size": subset_size, "target": target,
                         "statistics": "dense pass (released solver order)", "variants": {}}
    if flow_options:
        _say(progress, "FLOW: outlier statistics on the dense model")
        # A variant may carry its own "hyper_m"; every threshold comes from one dense pass.
        thresholds = [hyper_m] + sorted({float(o["hyper_m"]) for o in flow_options.values()
                                         if "hyper_m" in o} - {hyper_m})
        by_threshold = timed("flow statistics", flow_statistics_by_threshold, model, calib,
                             thresholds, subset_size=subset_size, batch_size=batch_size,
                             progress=progress)

        def as_rows(stats):
            return [{"ratio": float(s.ratio), "locality": float(s.locality),
                     "count": int(s.count)} for s in stats]

        flow_report["blocks"] = as_rows(by_threshold[hyper_m])
        flow_report["blocks_by_hyper_m"] = {f"{h:g}": as_rows(by_threshold[h])
                                            for h in thresholds}
        by_patterns: dict[tuple, str] = {}
        for name, options in flow_options.items():
            variant = flow_report["variants"][name] = {"options": {
                k: v if isinstance(v, (int, float, str, bool, type(None)))
                else [str(p) for p in v] if isinstance(v, (list, tuple))
                and all(isinstance(p, NMPattern) for p in v) else repr(v)
                for k, v in options.items()}}
            options = dict(options)
            stats = by_threshold[float(options.pop("hyper_m", hyper_m))]
            ratios = [s.ratio for s in stats]
            localities = [s.locality for s in stats]
            try:
                plan = timed("flow selection", flow.select_patterns, ratios, localities,
                             target, **options)
            except flow.FlowInfeasible as exc:
                # Reported, never padded: the variant simply has no configuration.
                variant["infeasible"] = str(exc)
                _say(progress, f"{name}: infeasible: {exc}")
                continue
            variant["plan"] = _plan_dict(plan)
            key = tuple(plan.patterns)
            if key in by_patterns:
                _say(progress, f"{name}: same patterns as {by_patterns[key]}, reused")
                configs[name] = dict(configs[by_patterns[key]], same_as=by_patterns[key])
                continue
            by_patterns[key] = name
            _say(progress, f"{name}: {' '.join(str(p) for p in plan.patterns)}")
            result = timed(f"prune {name}", calibrate_and_prune, model, calib, plan,
                           batch_size=batch_size, progress=progress)
            configs[name] = {"patterns": result.patterns, "model": result.model}

    _say(progress, "per-layer errors on held-out tokens")
    pruned = {name: c["model"] for name, c in configs.items()
              if name != "dense" and "same_as" not in c}
    errors = timed("layer errors", layer_errors, model, pruned, evaluation[:n_error_windows])

    out: dict[str, dict] = {}
    ppl_cache: dict[str, float] = {}
    for name, c in configs.items():
        source = c.get("same_as", name)
        if source not in ppl_cache:
            _say(progress, f"{name}: perplexity")
            ppl_cache[source] = timed(f"perplexity {source}", perplexity, c["model"],
                                      evaluation, batch_size=batch_size)
        patterns = c["patterns"]
        sparse = [i for i, p in enumerate(patterns) if not p.is_dense]
        check_block = sparse[0] if sparse else 0
        _, inputs = layer_inputs(c["model"], check_block, evaluation[:1])
        int8 = {}
        for linear in LINEAR_NAMES:
            # The last positions of the window: position 0 is the attention sink, atypical.
            check = timed("int8 golden", int8_layer_check, cfg,
                          c["model"].blocks[check_block].linears[linear],
                          inputs[linear][-int8_tokens:], patterns[check_block],
                          rows=int8_rows, tokens=int8_tokens)
            int8[linear] = check.to_dict()
        block_errors = errors.get(source)
        out[name] = {
            "patterns": [str(p) for p in patterns],
            "same_as": c.get("same_as"),
            "sparsity": sparsity_summary(c["model"], patterns),
            "perplexity": ppl_cache[source],
            "errors": None if block_errors is None else [e.to_dict() for e in block_errors],
            "hardware": hardware_costs(c["model"], patterns, cfg, tokens=hw_tokens),
            "int8": {"block": check_block, "linears": int8},
        }
    return {"protocol": {"model": "SmolLM2-135M-Instruct (Q4_1 GGUF dequantized to float32)",
                         "blocks": model.num_blocks, "seq_len": int(calib.shape[1]),
                         "n_calib": int(calib.shape[0]), "calib_tokens": int(calib.size),
                         "n_eval": int(evaluation.shape[0]), "eval_tokens": int(evaluation.size),
                         "n_error_windows": int(min(n_error_windows, evaluation.shape[0])),
                         "preset": cfg.slug, "hw_tokens": int(hw_tokens),
                         "int8_rows": int8_rows, "int8_tokens": int8_tokens},
            "flow": flow_report, "configs": out, "timings": timings}


# --------------------------------------------------------------------------------------------
# Report


def summary_rows(report: dict) -> tuple[list[str], list[list]]:
    """The headline table: one row per configuration."""
    header = ["config", "PPL", "sparsity (blocks)", "sparsity (params)", "zeros",
              "cycles/token", "vs dense", "weight MiB", "local err (mean)", "INT8 exact"]
    rows = []
    for name, c in report["configs"].items():
        hw, sp = c["hardware"], c["sparsity"]
        errs = c["errors"] or report["configs"].get(c["same_as"] or "", {}).get("errors")
        local = "-" if not errs else f"{np.mean([e['local_block'] for e in errs]):.3f}"
        exact = all(v["exact"] for v in c["int8"]["linears"].values())
        rows.append([name, f"{c['perplexity']:.2f}", f"{sp['block_mean']:.3f}",
                     f"{sp['by_parameters']:.3f}", f"{sp['zero_fraction']:.3f}",
                     hw["cycles"], f"{hw['speedup']:.2f}x",
                     f"{hw['weight_bits'] / 8 / 2**20:.1f}", local, "yes" if exact else "NO"])
    return header, rows


def format_report(report: dict, notes: Sequence[str] = ()) -> str:
    """The Markdown report: protocol, headline table, patterns, per-block errors, INT8."""
    p = report["protocol"]
    parts = ["# FLOW vs uniform N:M on SmolLM2-135M", "",
             f"Protocol: {p['model']}, {p['blocks']} blocks. Calibration {p['n_calib']} × "
             f"{p['seq_len']} tokens ({p['calib_tokens']}), evaluation {p['n_eval']} × "
             f"{p['seq_len']} tokens ({p['eval_tokens']}) from disjoint Wikipedia lead "
             f"sections (`textdata`, `<|endoftext|>` between documents); perplexity is "
             f"exp(mean NLL) over every predicted token of independent windows starting at "
             f"position 0. Per-layer errors on the first {p['n_error_windows']} evaluation "
             f"windows. Macro `{p['preset']}`, cycles for {p['hw_tokens']} token(s) through "
             f"every linear (cycle model).", ""]
    header, rows = summary_rows(report)
    parts += ["## Results", "", markdown_table(header, rows), ""]
    parts += ["## Patterns per block", ""]
    names = list(report["configs"])
    blocks = len(report["configs"][names[0]]["patterns"])
    parts.append(markdown_table(["block"] + names, [
        [i] + [report["configs"][n]["patterns"][i] for n in names] for i in range(blocks)]))
    parts.append("")
    fl = report["flow"]
    if "blocks" in fl:
        parts += ["## FLOW statistics and hyperparameters", "",
                  f"Outlier threshold Hyper_m = {fl['hyper_m']} × block mean score unless a "
                  f"variant sets its own, locality from the first {fl['subset_size']} outliers; "
                  f"statistics from a {fl['statistics']}; target mean block sparsity "
                  f"{fl['target']}.", ""]
        for vname, v in fl["variants"].items():
            if "infeasible" in v:
                parts.append(f"- `{vname}`: options {v['options']}; infeasible: "
                             f"{v['infeasible']}")
            else:
                plan = v["plan"]
                weighted = ("" if plan.get("weighted_sparsity") is None
                            else f", weighted {plan['weighted_sparsity']:.4f}")
                parts.append(f"- `{vname}`: options {v['options']}; mean block sparsity "
                             f"{plan['mean_sparsity']:.4f}{weighted}, objective "
                             f"{plan['objective']:.3f}, forced dense {plan['forced']}, "
                             f"M direction {plan['m_direction']}")
        parts.append("")
        by_h = fl.get("blocks_by_hyper_m") or {f"{fl['hyper_m']:g}": fl["blocks"]}
        header = ["block"]
        for h in by_h:
            header += [f"outlier ratio (%) @{h}", f"locality @{h}", f"outliers @{h}"]
        rows = []
        for i in range(len(fl["blocks"])):
            row = [i]
            for stats in by_h.values():
                row += [f"{stats[i]['ratio']:.3f}", f"{stats[i]['locality']:.4g}",
                        stats[i]["count"]]
            rows.append(row)
        parts.append(markdown_table(header, rows))
        parts.append("")
    with_errors = [n for n in names if report["configs"][n]["errors"]]
    if with_errors:
        parts += ["## Relative output error per block (local / propagated)", "",
                  "Local: dense input through pruned weights. Propagated: the pruned model's "
                  "own input through its pruned weights, against the dense layer output. Both "
                  "over the seven linears of the block.", ""]
        parts.append(markdown_table(["block"] + with_errors, [
            [i] + [f"{report['configs'][n]['errors'][i]['local_block']:.3f} / "
                   f"{report['configs'][n]['errors'][i]['propagated_block']:.3f}"
                   for n in with_errors] for i in range(blocks)]))
        parts.append("")
        parts.append(markdown_table(["linear (mean local error)"] + with_errors, [
            [lin] + [f"{np.mean([e['local'][lin] for e in report['configs'][n]['errors']]):.3f}"
                     for n in with_errors] for lin in LINEAR_NAMES]))
        parts.append("")
    channels = "all" if p["int8_rows"] is None else f"the first {p['int8_rows']}"
    parts += ["## INT8 on the golden model", "",
              f"Per configuration, each linear of its first sparse block (block 0 if none), "
              f"{channels} output channels, the last {p['int8_tokens']} tokens of the first "
              f"evaluation window (through the configuration's own pruned blocks); weights per "
              f"channel, activations per tensor, symmetric INT8, run on the golden model and "
              f"compared with the integer reference.", ""]
    int8_rows = []
    for n in names:
        c = report["configs"][n]["int8"]
        for lin, v in c["linears"].items():
            int8_rows.append([n, c["block"], lin, v["pattern"], f"{v['rows']}×{v['k']}",
                              "yes" if v["exact"] else "NO", v["cycles"], v["predicted_cycles"],
                              f"{v['dequant_error']:.4f}", v["weight_zeros_added"]])
    parts.append(markdown_table(["config", "block", "linear", "pattern", "slice", "exact",
                             "cycles", "predicted", "dequant err", "weights → 0"], int8_rows))
    parts.append("")
    timings = report.get("timings", {})
    if timings:
        parts += ["## Timings (s)", "", markdown_table(["step", "seconds"], [
            [k, f"{v:.1f}"] for k, v in timings.items()]), ""]
    if notes:
        parts += ["## Notes", ""] + bullets(notes) + [""]
    return "\n".join(parts)


def write_report(report: dict, out_dir, notes: Sequence[str] = ()) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into ``out_dir`` (created); return both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "report.json", out_dir / "report.md"
    json_path.write_text(json.dumps(dict(report, notes=list(notes)), indent=1) + "\n")
    md_path.write_text(format_report(report, notes))
    return json_path, md_path


def _reading(report: dict) -> list[str]:
    """Plain statements of the outcome against the issue's goal (FLOW below uniform 4:8)."""
    configs = report["configs"]
    notes = []
    if "4:8" in configs:
        for name, c in configs.items():
            if name.startswith("flow"):
                diff = c["perplexity"] - configs["4:8"]["perplexity"]
                verdict = "below" if diff < 0 else "not below"
                notes.append(f"{name}: perplexity {c['perplexity']:.2f} at mean block sparsity "
                             f"{c['sparsity']['block_mean']:.3f} is {verdict} uniform 4:8 "
                             f"({configs['4:8']['perplexity']:.2f}, {diff:+.2f}).")
    return notes


VARIANT_NAMES = ("flow", "flow-paper", "flow-owl5", "flow-released-ends", "flow-hw")


def flow_variants(cfg: MacroConfig, *, tolerance: float = 0.0) -> dict[str, dict]:
    """The FLOW variants of the command line, as ``flow_options`` for :func:`run_experiment`.

    - ``flow``: the released settings (Hyper_m 0.5, released M direction, choice set
      {2:4, 4:4, 2:8, 4:8, 8:8}), first and last blocks dense inside the constraint;
    - ``flow-paper``: the paper's M direction;
    - ``flow-owl5``: OWL's outlier threshold, Hyper_m = 5;
    - ``flow-released-ends``: the released order, ends overwritten dense after solving (the
      mean sparsity then falls below the target);
    - ``flow-hw``: the released choices plus every other pattern ``cfg`` runs (1:2, 1:4, 1:8
      on ``flexcim``).
    """
    extra = [NMPattern(n, m) for n, m in cfg.patterns
             if NMPattern(n, m) not in flow.RELEASED_CHOICES]
    base = {"tolerance": tolerance}
    return {"flow": dict(base),
            "flow-paper": dict(base, m_direction="paper"),
            "flow-owl5": dict(base, hyper_m=flow.OWL_HYPER_M),
            "flow-released-ends": dict(base, force_dense_ends="after_solve"),
            "flow-hw": dict(base, choices=list(flow.RELEASED_CHOICES) + extra)}


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run the experiment and write the report (see ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="python -m sparsecim.sw.experiments.flow_eval",
        description="FLOW per-block N:M selection against uniform 2:4 and 4:8 on SmolLM2-135M: "
                    "Wanda pruning calibrated block by block, perplexity, per-layer errors, "
                    "macro cycles and an INT8 golden-model check.")
    parser.add_argument("--out", default="build/flow", help="report folder (default %(default)s)")
    parser.add_argument("--n-calib", type=int, default=64,
                        help="calibration windows (default %(default)s)")
    parser.add_argument("--n-eval", type=int, default=32,
                        help="evaluation windows (default %(default)s)")
    parser.add_argument("--seq-len", type=int, default=256,
                        help="tokens per window (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the text split (default %(default)s)")
    parser.add_argument("--n-error-windows", type=int, default=8,
                        help="evaluation windows for per-layer errors (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="windows run together (default %(default)s)")
    parser.add_argument("--num-blocks", type=int, default=None,
                        help="keep only the first blocks (quick runs; default all)")
    parser.add_argument("--target", type=float, default=0.5,
                        help="FLOW mean block sparsity (default %(default)s)")
    parser.add_argument("--hyper-m", type=float, default=None,
                        help="outlier threshold × mean score (default: the released value)")
    parser.add_argument("--tolerance", type=float, default=0.0,
                        help="FLOW sparsity tolerance (default %(default)s: exact)")
    parser.add_argument("--variants", default=",".join(VARIANT_NAMES),
                        help="comma-separated FLOW variants to run, from "
                             f"{', '.join(VARIANT_NAMES)} (default all)")
    parser.add_argument("--preset", default="flexcim",
                        help="macro: a preset name or a TOML file (default %(default)s)")
    parser.add_argument("--hw-tokens", type=int, default=1,
                        help="tokens for the cycle figures (default %(default)s)")
    parser.add_argument("--int8-rows", type=int, default=None,
                        help="output channels in the INT8 check (default: all)")
    parser.add_argument("--int8-tokens", type=int, default=4,
                        help="tokens in the INT8 check (default %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)

    def progress(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    try:
        cfg = resolve_macro(args.preset)
    except ValueError as exc:
        parser.error(str(exc))
    variants = flow_variants(cfg, tolerance=args.tolerance)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in variants]
    if unknown:
        parser.error(f"--variants must name variants from {', '.join(VARIANT_NAMES)}, not "
                     f"{', '.join(unknown)}")
    flow_options = {n: variants[n] for n in names}
    start = time.perf_counter()
    model = load_smollm2(num_blocks=args.num_blocks)
    calib, evaluation = calibration_and_evaluation_windows(
        model.encode, seq_len=args.seq_len, n_calib=args.n_calib, n_eval=args.n_eval,
        seed=args.seed, separator=[model.endoftext_id])
    report = run_experiment(model, calib, evaluation, target=args.target,
                            flow_options=flow_options, hyper_m=args.hyper_m,
                            n_error_windows=args.n_error_windows, batch_size=args.batch_size,
                            cfg=cfg, hw_tokens=args.hw_tokens,
                            int8_rows=args.int8_rows, int8_tokens=args.int8_tokens,
                            progress=progress)
    report["protocol"]["seed"] = args.seed
    report["timings"]["total"] = time.perf_counter() - start
    notes = _reading(report)
    json_path, md_path = write_report(report, args.out, notes)
    header, rows = summary_rows(report)
    print(markdown_table(header, rows))
    for note in notes:
        print(note)
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
