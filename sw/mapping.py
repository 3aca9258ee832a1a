"""Mapping of dense weight matrices onto the macro (the "Linear" baseline).

A mapping is data: which block of the weight matrix sits on the array in which tile. Printing
and scheduling live elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..hw.config import MacroConfig

__all__ = ["Tile", "DenseMapping", "map_dense"]


@dataclass(frozen=True)
class Tile:
    """Weights ``W[k0:k1, n0:n1]`` on global array rows ``0 .. k1-k0-1`` and columns
    ``0 .. n1-n0-1``; the rest of the array is padding."""
    k0: int
    k1: int
    n0: int
    n1: int

    @property
    def rows(self) -> int:
        return self.k1 - self.k0

    @property
    def cols(self) -> int:
        return self.n1 - self.n0


@dataclass(frozen=True)
class DenseMapping:
    """A (K × N) weight matrix tiled over the array: K over the ``rows × P`` global rows (all
    sub-macros reduce together), N over the ``cols`` columns; edge tiles are zero-padded.

    Tiles are ordered N-major: all K tiles of the first N block, then the next N block.
    """
    config: MacroConfig
    k: int
    n: int
    tiles: tuple[Tile, ...]

    @property
    def k_tiles(self) -> int:
        return -(-self.k // self.config.reduction)

    @property
    def n_tiles(self) -> int:
        return -(-self.n // self.config.cols)

    @property
    def arrays(self) -> int:
        """Array loads a token needs: one per tile."""
        return len(self.tiles)

    @property
    def utilization(self) -> float:
        """Mapped non-zero weights / (arrays × cells); dense weights count as non-zero."""
        return self.k * self.n / (self.arrays * self.config.cells)

    @property
    def weight_bytes(self) -> int:
        """Bytes of the weight matrix itself."""
        return -(-self.k * self.n * self.config.weight_bits // 8)

    @property
    def array_bytes(self) -> int:
        """Bytes of array storage the tiles occupy, padding included."""
        return -(-self.arrays * self.config.cells * self.config.weight_bits // 8)

    @property
    def macs_per_token(self) -> int:
        return self.k * self.n


def map_dense(cfg: MacroConfig, k: int, n: int) -> DenseMapping:
    """Tile a ``k × n`` weight matrix onto ``cfg``'s array.

    Raises
    ------
    ValueError
        If ``k`` or ``n`` is not a positive integer.
    """
    for name, value in (("k", k), ("n", n)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    rows, cols = cfg.reduction, cfg.cols
    tiles = tuple(Tile(k0, min(k0 + rows, k), n0, min(n0 + cols, n))
                  for n0 in range(0, n, cols) for k0 in range(0, k, rows))
    return DenseMapping(cfg, k, n, tiles)
