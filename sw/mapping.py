"""Mapping of dense weight matrices onto the macro (the "Linear" baseline).

A mapping is data: which block of the weight matrix sits on the array in which tile. Printing
and scheduling live elsewhere.

The array seen by a dense mapping is ``reduction × cols`` (``reduction = rows × P`` global
rows: in dense mode all P sub-macros reduce together and their column sums are merged). A
``K × N`` weight matrix is cut into ``ceil(K / reduction) × ceil(N / cols)`` tiles; edge tiles
are smaller and the cells they leave empty are padding.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

from ..hw.config import MacroConfig

__all__ = ["Tile", "DenseMapping", "map_dense"]


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
class DenseMapping:
    """A ``K × N`` weight matrix tiled over the array.

    Attributes
    ----------
    config : MacroConfig
        The macro mapped onto.
    k, n : int
        The weight matrix shape (inputs × outputs).
    tiles : tuple of Tile
        N-major: all K tiles of the first N block, then those of the next. Together they cover
        every ``(k, n)`` exactly once; each has at most ``config.reduction`` rows and at most
        ``config.cols`` columns.
    """
    config: MacroConfig
    k: int
    n: int
    tiles: tuple[Tile, ...]

    @property
    def k_tiles(self) -> int:
        """Tiles along K: ``ceil(k / reduction)``."""
        return -(-self.k // self.config.reduction)

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
        """Mapped non-zero weights / (arrays × cells); dense weights all count as non-zero,
        so this is ``k · n / (arrays · cells)`` and only padding lowers it."""
        return self.k * self.n / (self.arrays * self.config.cells)

    @property
    def weight_bytes(self) -> int:
        """Bytes of the weight matrix itself at ``weight_bits`` per weight, rounded up."""
        return -(-self.k * self.n * self.config.weight_bits // 8)

    @property
    def array_bytes(self) -> int:
        """Bytes of array storage the tiles occupy, padding included."""
        return -(-self.arrays * self.config.cells * self.config.weight_bits // 8)

    @property
    def macs_per_token(self) -> int:
        """Multiply-accumulates of one token (one row of activations): ``k · n``."""
        return self.k * self.n


def map_dense(cfg: MacroConfig, k: int, n: int) -> DenseMapping:
    """Tile a ``k × n`` weight matrix onto ``cfg``'s array, K over the ``reduction`` global
    rows and N over the ``cols`` columns, partial tiles at the high edges.

    Parameters
    ----------
    cfg : MacroConfig
        The macro.
    k, n : int
        Inputs and outputs of the weight matrix; any positive integers.

    Returns
    -------
    DenseMapping

    Raises
    ------
    ValueError
        If ``k`` or ``n`` is not a positive integer, as ``"k must be a positive integer,
        not 0"``.
    """
    for name, value in (("k", k), ("n", n)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    k, n = int(k), int(n)
    rows, cols = cfg.reduction, cfg.cols
    tiles = tuple(Tile(k0, min(k0 + rows, k), n0, min(n0 + cols, n))
                  for n0 in range(0, n, cols) for k0 in range(0, k, rows))
    return DenseMapping(cfg, k, n, tiles)
