"""Mapping of dense weight matrices onto the macro (the "Linear" baseline).

A mapping is data: which block of the weight matrix sits on the array in which tile. Printing
and scheduling live elsewhere.

A ``K × N`` weight matrix is cut into tiles of ``pass_inputs(n, m)`` inputs × ``cols``
outputs: ``ceil(K / pass_inputs) × ceil(N / cols)`` tiles, edge tiles smaller, the cells they
leave empty padding. One tile fills the whole array and one compute pass covers it.

- Dense (1:1): ``pass_inputs = rows × P``; global row ``g`` holds input ``k0 + g``.
- N:M: the P sub-macros form ``C = P/n`` clusters of n. Tile input group ``q`` (inputs
  ``k0 + q·m .. +m-1``) sits on row ``q % rows`` of cluster ``q // rows``; sub-macro ``j`` of
  the cluster holds the ``j``-th kept weight of the group for each output, with its position
  in the group as metadata. ``pass_inputs = rows × C × m``, so a tile covers ``m/n`` times the
  inputs of a dense tile with the same cells: the ideal speedup.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

from ..hw.config import MacroConfig, ceil_log2

__all__ = ["Tile", "TileMapping", "map_dense", "map_nm"]


@dataclass(frozen=True)
class Tile:
    """Weights ``W[k0:k1, n0:n1]`` placed on global array rows ``0 .. k1-k0-1`` and columns
    ``0 .. n1-n0-1``; the rest of the array is padding.

    Invariant: ``0 <= k0 < k1`` and ``0 <= n0 < n1`` (a tile is never empty).
    """
    k0: int
    k1: int
    n0: int
    n1: int

    @property
    def rows(self) -> int:
        """Array rows the tile occupies (its share of K)."""
        return self.k1 - self.k0

    @property
    def cols(self) -> int:
        """Array columns the tile occupies (its share of N)."""
        return self.n1 - self.n0


@dataclass(frozen=True)
class TileMapping:
    """A ``K × N`` weight matrix tiled over the array in one pattern (see the module docstring).

    Attributes
    ----------
    config : MacroConfig
        The macro mapped onto.
    k, n : int
        The weight matrix shape (inputs × outputs).
    tiles : tuple of Tile
        N-major: all K tiles of the first N block, then those of the next. Together they cover
        every ``(k, n)`` exactly once; each has at most ``pass_inputs`` rows (inputs) and at
        most ``config.cols`` columns.
    pattern : tuple of (int, int)
        ``(n, m)``; ``(1, 1)`` is dense.
    """
    config: MacroConfig
    k: int
    n: int
    tiles: tuple[Tile, ...]
    pattern: tuple[int, int] = (1, 1)

    @property
    def pass_inputs(self) -> int:
        """Inputs one tile (one pass) covers."""
        return self.config.pass_inputs(*self.pattern)

    @property
    def groups(self) -> int:
        """Input groups of ``m`` along K (the last may be partial): ``ceil(k / m)``."""
        return -(-self.k // self.pattern[1])

    @property
    def slots(self) -> int:
        """Weights the pattern keeps: ``n_out × groups × n`` (``k × n_out`` when dense)."""
        return self.n * self.groups * self.pattern[0]

    @property
    def k_tiles(self) -> int:
        """Tiles along K: ``ceil(k / pass_inputs)``."""
        return -(-self.k // self.pass_inputs)

    @property
    def n_tiles(self) -> int:
        """Tiles along N: ``ceil(n / cols)``."""
        return -(-self.n // self.config.cols)

    @property
    def arrays(self) -> int:
        """Array fills a token needs: one per tile."""
        return len(self.tiles)

    @property
    def utilization(self) -> float:
        """Mapped weights / (arrays × cells): :attr:`slots` (every kept weight counts, as the
        mapper cannot know which are zero) over the cells of the tiles; only padding lowers it."""
        return self.slots / (self.arrays * self.config.cells)

    @property
    def weight_bytes(self) -> int:
        """Bytes of the kept weight values at ``weight_bits`` each, rounded up."""
        return -(-self.slots * self.config.weight_bits // 8)

    @property
    def meta_bytes(self) -> int:
        """Bytes of metadata: ``ceil(log2 m)`` bits per kept weight (0 when dense)."""
        return -(-self.slots * ceil_log2(self.pattern[1]) // 8)

    @property
    def array_bytes(self) -> int:
        """Bytes of array storage the tiles occupy, padding included."""
        return -(-self.arrays * self.config.cells * self.config.weight_bits // 8)

    @property
    def macs_per_token(self) -> int:
        """Multiply-accumulates of one token with the kept weights: :attr:`slots`
        (``k · n`` when dense)."""
        return self.slots


def map_dense(cfg: MacroConfig, k: int, n: int) -> TileMapping:
    """Tile a dense ``k × n`` weight matrix: :func:`map_nm` with pattern ``(1, 1)``."""
    return map_nm(cfg, k, n, (1, 1))


def map_nm(cfg: MacroConfig, k: int, n: int, pattern: tuple[int, int]) -> TileMapping:
    """Tile a ``k × n`` weight matrix in pattern ``(n, m)`` onto ``cfg``'s array: K in tiles
    of ``pass_inputs`` inputs, N over the ``cols`` columns, partial tiles at the high edges.

    Parameters
    ----------
    cfg : MacroConfig
        The macro.
    k, n : int
        Inputs and outputs of the weight matrix; any positive integers.
    pattern : tuple of (int, int)
        ``(n, m)``, ``(1, 1)`` for dense; must be supported by ``cfg``.

    Returns
    -------
    TileMapping

    Raises
    ------
    ValueError
        If ``k`` or ``n`` is not a positive integer, as ``"k must be a positive integer,
        not 0"``, or the macro does not support the pattern.
    """
    for name, value in (("k", k), ("n", n)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    k, n = int(k), int(n)
    pattern = tuple(int(v) for v in pattern)
    rows, cols = cfg.pass_inputs(*pattern), cfg.cols
    tiles = tuple(Tile(k0, min(k0 + rows, k), n0, min(n0 + cols, n))
                  for n0 in range(0, n, cols) for k0 in range(0, k, rows))
    return TileMapping(cfg, k, n, tiles, pattern)
