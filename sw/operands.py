"""Random operands over a macro's full widths, for runs, benchmarks and tests.

The CLI's ``gemm`` command (:func:`gemm_operands`), ``make bench`` and the test suite draw
their matrices here, so that every level sees operands from one generator.
"""

from __future__ import annotations

import numpy as np

from .nm import NMPattern, prune_magnitude

__all__ = ["random_gemm", "gemm_operands"]


def random_gemm(cfg, k: int, n: int, tokens: int, seed: int, pattern=(1, 1)):
    """Uniform random signed operands over the full widths of ``cfg`` (extremes included).

    With an N:M ``pattern`` (``(n, m)``), every output channel (column of ``w``) keeps ``n``
    random positions of each group of ``m`` inputs, and 5% of the kept weights are zeroed
    too, so that some groups hold fewer than ``n`` non-zeros.
    """
    rng = np.random.default_rng(seed)
    a_lo, a_hi = -(2 ** (cfg.act_bits - 1)), 2 ** (cfg.act_bits - 1)
    w_lo, w_hi = -(2 ** (cfg.weight_bits - 1)), 2 ** (cfg.weight_bits - 1)
    x = rng.integers(a_lo, a_hi, size=(tokens, k), dtype=np.int64)
    w = rng.integers(w_lo, w_hi, size=(k, n), dtype=np.int64)
    keep, group = pattern
    if keep < group:
        groups = -(-k // group)
        # A random permutation of each (group, column): its first `keep` ranks survive.
        ranks = rng.random((groups * group, n)).reshape(groups, group, n).argsort(axis=1)
        ranks = ranks.argsort(axis=1).reshape(groups * group, n)[:k]
        w = np.where(ranks < keep, w, 0)
        w[rng.random(w.shape) < 0.05] = 0
    return x, w


def gemm_operands(cfg, k: int, n: int, tokens: int, seed: int, pattern=(1, 1)):
    """The operands of ``sparsecim gemm``: :func:`random_gemm`'s dense ``(tokens, k)`` and
    ``(k, n)``, the weights then pruned by magnitude to ``pattern`` (``(n, m)``): every output
    channel (column of ``w``) keeps the largest ``n`` of each group of ``m`` inputs."""
    x, w = random_gemm(cfg, k, n, tokens, seed)
    if tuple(pattern) != (1, 1):
        w = prune_magnitude(w.T, NMPattern(*pattern)).T
    return x, w
