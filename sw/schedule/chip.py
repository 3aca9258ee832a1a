"""Scheduling linear layers on a chip of K macros (``docs/chip.md``): placement, the resident
and streamed regimes, and exact per-layer figures from the chip cycle model.

A layer ``x · w`` (``w`` dense or N:M) is tiled exactly as on one macro
(:func:`~sparsecim.sw.mapping.map_nm`: ``n_tiles × k_tiles`` tiles of ``pass_inputs`` inputs ×
``cols`` outputs; weight rows packed by the GEMM scheduler's
:func:`~sparsecim.sw.schedule.gemm.tile_weight_bytes` and loaded in its
:func:`~sparsecim.sw.schedule.gemm.load_ranges`). Only where tiles go and in which order the
commands reach the chip is new.

Placement of a layer on ``M`` macros ``base .. base+M-1`` (:class:`LayerPlacement`)
------------------------------------------------------------------------------------
The macros form ``G`` *groups* of ``S`` contiguous macros: ``S = min(k_tiles, M)``,
``G = min(M // S, n_tiles)``. Macro ``j`` of a group owns a contiguous run of the K tiles (all
``k_tiles`` split as evenly as possible over the ``S`` macros), and output tile ``nt`` is
computed by group ``nt % G``. So the tiles that share output columns (the reduction slices of
one ``nt``) sit on the contiguous macros of one group, each accumulates its slices in its own
accumulator, and one READ with ``span = S`` sums the group on the way out (the result router's
adder, ``docs/chip.md``): ``n_tiles`` result beats per token instead of ``tiles``.

- **Resident** iff every macro holds at most one tile (``M >= tiles``, so ``S = k_tiles`` and
  ``G = n_tiles``): the LOAD_Ws run once, in a load phase reported apart, then tokens stream.
- **Streamed** otherwise: for every chunk of tokens each group walks its output tiles again,
  each macro loading its tiles' rows from off chip (LOAD_W, span 1: a row is broadcast to a
  LOAD_W's whole range, so distinct tiles need one LOAD_W each) and computing them. The
  commands go round-robin over the groups (all of group 0's for ``nt``, its READ, then group
  1's for ``nt + 1``, ...) and, inside a group, macro after macro, one K tile each per round:
  the weight port serves LOAD_Ws in dispatch order, so while macro ``j + 1`` (or group
  ``g + 1``) loads, macro ``j`` computes from its command queue. That is the double
  buffering; the command queues (``ChipConfig.queue``) let the dispatcher run ahead of a busy
  macro. What it cannot hide: a group's READ holds all its macros for the chunk's beats, and
  the first macro's next load waits for it (and the last macro's compute before it), so
  with one group the weight port idles ``2·T`` and a few cycles per output tile (measured on
  ``edge``, 4096 × 11008: 6 cycles at ``T = 1``, 0.07 % of the token; 139 at ``T = 64``,
  3 %); with two groups one reads while the other loads.

Activations (the *acts mode*) in chunks of ``T`` tokens (``chunk``):

- ``"broadcast"``: one LOAD_A per chunk with ``span = G·S`` carries all K tiles of the
  chunk's tokens (entry ``kt·T + t``); each macro computes from the entries of its K tiles.
  The macros sharing a K tile are ``S`` apart, not contiguous, so broadcasting the whole
  input to the layer is how one beat reaches them all. ``T = min(tokens, acc_depth,
  act_depth // k_tiles)``. The default when ``G > 1`` (a resident layer with several K
  tiles, say): no activation is sent twice.
- ``"own"``: one LOAD_A per macro per chunk carrying its own K tiles (entry ``(kt -
  first)·T + t``), beside the macro's first tile of the chunk so that the activation port
  works while the weight port loads. ``T = min(tokens, acc_depth, act_depth // owned)``.
  The default when ``G = 1`` (nothing sent twice then either).
- ``"per_tile"``: a LOAD_A of the K tile's ``T`` entries before each COMPUTE (re-sent for
  every output tile), ``T = min(tokens, acc_depth, act_depth)``: for a streamed layer whose
  macros own too many K tiles for a full chunk of each in the buffer, a larger chunk means
  fewer weight reloads.

:func:`layer_candidates` lists the placements worth pricing (group sizes, acts modes) and
:func:`chip_layer_figures` keeps the fastest on the chip cycle model, for decode and for
prefill apart: the scheduler minimises cycles per token by measuring, not by a formula.

Why sums on chip rather than a broadcast of contiguous LOAD_As: a chip command addresses one
contiguous range, and tiles sharing outputs and tiles sharing inputs cannot both be
contiguous. Reading summed groups saves ``k_tiles`` times the result beats and needs no
host-side additions; broadcasting the whole input (mode ``"broadcast"``) recovers the one-send
property for the activations where the buffer holds them.

A model (:func:`place_model`)
-----------------------------
Resident layers each get their own macros, smallest first, while they fit (small dense
layers share macros on disjoint rows, ``row0``: one macro holds several layers); the streamed
layers share the rest (a *pool*, at least two macros when there are any, so that loads in one
overlap compute in the other). A trace runs its layers one after the other, each with its
own inputs: the chip has no command that waits for a READ, so a layer's LOAD_A may be served
before an earlier layer's READs end. Such a trace is exact for independent layers (as the
tests run them); for a model, whose layers feed each other, per-layer figures price each
layer alone, from reset, and a model's cycles per token are their sum (no overlap between
layers is claimed). Each run's cycles include its fixed start and end (CONFIG, the first
fetches, END: a few cycles).

Figures (:func:`chip_layer_figures`) come from the chip event model
(:func:`~sparsecim.sw.chip_timing.chip_counters`, exact, equal to the cycle-stepped reference
:func:`~sparsecim.sw.chip_timing.step_chip` as the tests check) run on the very commands this
module emits; no data beats are built for pricing. Off-chip bytes are ``w_load ×
weight_row_bytes``: a LOAD_W row carries ``meta_bits`` per weight even for a dense layer,
which the row format (``weight_row_layout``) fixes.

Monarch (:func:`schedule_monarch_chip`): each factor's blocks in groups that fit a tile's
diagonal (SparseMap's latency mapping, :func:`~sparsecim.sw.blockdiag_map.map_latency` on one
``pass_inputs × cols`` tile: its arrays are the groups), each group a layer, so the blocks
spread over the macros; the requantize-and-transpose between the factors goes through the
global buffer (every second-factor block needs an output of every first-factor block, which no
single macro holds).
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
from dataclasses import dataclass, field

import numpy as np

from ...hw.config import ChipConfig, MacroConfig
from ...hw.isa import (
    Command,
    Opcode,
    act_beat_layout,
    beat_bytes,
    config_command,
    encode_chip,
    pack_beat_bytes,
    requantize,
)
from ...hw.pattern import as_pattern
from ...hw.trace import BeatArray, Step
from ..blockdiag_map import BlockDiagonal, map_latency
from ..mapping import TileMapping, map_nm
from .gemm import ReadBlock, check_shapes, k_tile_inputs, load_ranges, tile_weight_bytes
from .monarch import check_blocks
from .steps import CommandCache, pack_rows

__all__ = ["ChipLayer", "LayerPlacement", "ModelPlan", "ChipRead", "ChipSchedule",
           "LayerFigures", "place_layer", "layer_candidates", "place_model", "schedule_chip",
           "chip_ops", "chip_words", "chip_layer_figures", "model_figures", "ACTS_MODES",
           "ChipMonarchSchedule", "schedule_monarch_chip", "model_layers", "packable",
           "load_phase"]

#: How a layer's activations reach its macros (see the module docstring).
ACTS_MODES = ("broadcast", "own", "per_tile")


def _positive(name: str, value) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return int(value)


@dataclass(frozen=True)
class ChipLayer:
    """A linear layer to place on the chip: ``k`` inputs, ``n`` outputs, in ``pattern``.

    Attributes
    ----------
    name : str
        For reports (``"blocks.0.mlp.gate"``); layers of the same shape and pattern are priced
        once whatever their names.
    k, n : int
        Inputs and outputs (``w`` is ``k × n``).
    pattern : tuple of (int, int)
        ``(n, m)``; ``(1, 1)`` is dense. Anything :func:`as_pattern` accepts is normalised.
    """
    name: str
    k: int
    n: int
    pattern: tuple = (1, 1)

    def __post_init__(self):
        object.__setattr__(self, "k", _positive("k", self.k))
        object.__setattr__(self, "n", _positive("n", self.n))
        object.__setattr__(self, "pattern", tuple(int(v) for v in as_pattern(self.pattern)))

    @property
    def shape_key(self) -> tuple:
        """What the figures depend on: ``(k, n, pattern)``."""
        return (self.k, self.n, self.pattern)

    def mapping(self, cfg: MacroConfig) -> TileMapping:
        """The GEMM tiling on ``cfg`` (raises ``ValueError`` for an unsupported pattern)."""
        cfg.check_pattern(*self.pattern)
        return _mapping(cfg, self.k, self.n, self.pattern)


@functools.lru_cache(maxsize=256)
def _mapping(cfg: MacroConfig, k: int, n: int, pattern: tuple) -> TileMapping:
    """:func:`map_nm`, remembered: a model repeats a few shapes, each of thousands of tiles."""
    return map_nm(cfg, k, n, pattern)


def model_layers(model, pattern=(1, 1)) -> list[ChipLayer]:
    """Every linear of a :class:`~sparsecim.sw.model_shapes.ModelShape` (or a model name) as
    a :class:`ChipLayer` in ``pattern``, block by block in model order, named
    ``"<block>.<name>"`` (``"0.q"``, ..., ``"31.down"``; ``"<name>.<i>"`` inside a block for
    a shape listed ``count > 1`` times)."""
    from ..model_shapes import model_shape
    if isinstance(model, str):
        model = model_shape(model)
    blocks = max(lin.blocks for lin in model.linears)
    out = []
    for block in range(blocks):
        for lin in model.linears:
            if block >= lin.blocks:
                continue
            for i in range(lin.count):
                name = f"{block}.{lin.name}" + (f".{i}" if lin.count > 1 else "")
                out.append(ChipLayer(name, lin.inputs, lin.outputs, pattern))
    return out


@dataclass(frozen=True)
class LayerPlacement:
    """Where and how one layer runs (see the module docstring).

    Attributes
    ----------
    layer : ChipLayer
    mapping : TileMapping
    base, macros : int
        The macros ``base .. base+macros-1`` the layer uses (``groups × group`` of them).
    group : int
        S, macros per group: they share output tiles, each owning a run of the K tiles.
    groups : int
        G, groups; output tile ``nt`` runs on group ``nt % G``.
    resident : bool
        Every macro holds one tile for good (loaded once); else weights stream every chunk.
    chunk : int
        T, tokens per chunk.
    acts : str
        One of :data:`ACTS_MODES`.
    row0 : int
        First global weight row of the layer's tiles (0 unless the layer shares its macros
        with other small layers, :func:`place_model`): its weights sit on rows ``row0 ..
        row0+k-1`` and its activation entries hold its inputs at elements ``row0 ..``, zeros
        elsewhere, so the other layers' rows add 0 to its passes and its rows to theirs.
    """
    layer: ChipLayer
    mapping: TileMapping
    base: int
    macros: int
    group: int
    groups: int
    resident: bool
    chunk: int
    acts: str
    row0: int = 0

    def owned(self, j: int) -> range:
        """K tiles owned by macro ``j`` of every group: a contiguous, near-even split."""
        k_tiles, s = self.mapping.k_tiles, self.group
        return range(j * k_tiles // s, (j + 1) * k_tiles // s)

    @property
    def max_owned(self) -> int:
        return -(-self.mapping.k_tiles // self.group)

    def macro_of(self, nt: int, kt: int) -> int:
        """Chip index of the macro computing tile ``(nt, kt)``."""
        j = next(j for j in range(self.group) if kt in self.owned(j))
        return self.base + (nt % self.groups) * self.group + j


def place_layer(chip: ChipConfig, layer: ChipLayer, base: int, macros: int,
                tokens: int, *, streamed: bool = False, group: int | None = None,
                acts: str | None = None, row0: int = 0) -> LayerPlacement:
    """Place ``layer`` on macros ``base .. base+macros-1`` for runs of ``tokens`` tokens.

    Resident iff every macro holds one tile (``S = k_tiles``, ``G = n_tiles``) and not
    ``streamed`` (macros shared with other layers reload their weights every chunk even when
    one layer would fit). By default the group shape, the acts mode and the chunk follow
    the rules of the module docstring; ``group`` (S) and ``acts`` override them (the
    candidates :func:`layer_candidates` prices). Uses ``G·S <= macros`` of the macros
    (``LayerPlacement.macros``).

    Raises
    ------
    ValueError
        If the range is not on the chip, ``tokens`` is not positive, the macro does not run
        the layer's pattern, ``group`` is not from 1 to ``min(k_tiles, macros)``, ``acts``
        is unknown or does not fit the activation buffer, or ``row0`` is not 0 for a layer
        that is not :func:`packable` or puts its rows past the macro's.
    """
    macros, tokens = _positive("macros", macros), _positive("tokens", tokens)
    if not isinstance(base, numbers.Integral) or base < 0 or base + macros > chip.macros:
        raise ValueError(f"macros {base} .. {base + macros - 1} must lie on the chip's "
                         f"{chip.macros} macros")
    cfg = chip.macro
    mapping = layer.mapping(cfg)
    k_tiles, n_tiles = mapping.k_tiles, mapping.n_tiles
    s = min(k_tiles, macros)
    if group is not None:
        if not isinstance(group, numbers.Integral) or not 1 <= group <= s:
            raise ValueError(f"group must be an integer from 1 to {s}, not {group!r}")
        s = int(group)
    g = min(macros // s, n_tiles)
    resident = s == k_tiles and g == n_tiles and not streamed
    owned = -(-k_tiles // s)
    per_chunk = {"broadcast": k_tiles, "own": owned, "per_tile": 1}
    if acts is None:
        acts = ("broadcast" if g > 1 and k_tiles <= cfg.act_depth
                else "own" if owned <= cfg.act_depth else "per_tile")
    elif acts not in ACTS_MODES:
        raise ValueError(f"acts must be one of {', '.join(ACTS_MODES)}, not {acts!r}")
    elif per_chunk[acts] > cfg.act_depth:
        raise ValueError(f"acts {acts!r} needs {per_chunk[acts]} activation entries a token, "
                         f"more than act_depth ({cfg.act_depth})")
    chunk = min(tokens, cfg.acc_depth, cfg.act_depth // per_chunk[acts])
    if row0 and not (packable(cfg, layer) and isinstance(row0, numbers.Integral)
                     and 0 < row0 <= cfg.pass_inputs() - layer.k):
        raise ValueError(f"row0 must be 0, or place a dense one-K-tile layer within the "
                         f"macro's {cfg.pass_inputs()} rows, not {row0!r} for {layer.k} inputs")
    return LayerPlacement(layer=layer, mapping=mapping, base=int(base), macros=g * s,
                          group=s, groups=g, resident=resident, chunk=chunk, acts=acts,
                          row0=int(row0))


def packable(cfg: MacroConfig, layer: ChipLayer) -> bool:
    """A layer that may share its macros with other small layers (:func:`place_model`):
    dense, and at most half a macro's rows of inputs (so one K tile)."""
    return layer.pattern == (1, 1) and 2 * layer.k <= cfg.pass_inputs()


def layer_candidates(chip: ChipConfig, layer: ChipLayer, base: int, macros: int,
                     tokens: int, *, streamed: bool = False) -> list[LayerPlacement]:
    """The placements :func:`chip_layer_figures` prices and chooses from (fewest cycles).

    A resident layer keeps one tile per macro (``S = k_tiles``): its candidates are the acts
    modes the activation buffer allows. A streamed layer reloads its weights every chunk, so
    only the placements with the largest chunk are kept (a smaller chunk multiplies the
    weight traffic: priced, they came out 2 to 60 times slower), over two group sizes ``S``
    (``min(k_tiles, macros)`` and half of it: more groups, each macro owning more K tiles),
    each with every acts mode the buffer allows. ``"per_tile"`` re-sends activations for
    every output tile, so it is a candidate only where it gives a larger chunk
    (``acc_depth`` when the buffer cannot hold a chunk of every owned K tile). Default first.
    """
    first = place_layer(chip, layer, base, macros, tokens, streamed=streamed)
    top = min(first.mapping.k_tiles, macros)
    out = [first]
    for group in dict.fromkeys((top, max(1, top // 2)) if not first.resident else (top,)):
        options = {}
        for acts in ACTS_MODES:
            try:
                options[acts] = place_layer(chip, layer, base, macros, tokens,
                                            streamed=streamed, group=group, acts=acts)
            except ValueError:
                continue            # the activation buffer cannot hold this mode's chunk
        widest = max((p.chunk for a, p in options.items() if a != "per_tile"), default=0)
        for acts, placement in options.items():
            if (acts != "per_tile" or placement.chunk > widest) and placement not in out:
                out.append(placement)
    if first.resident:
        return out
    best = max(p.chunk for p in out)
    return [p for p in out if p.chunk == best]


@dataclass(frozen=True)
class ModelPlan:
    """Placements of a model's linears on one chip (:func:`place_model`).

    Attributes
    ----------
    chip : ChipConfig
    placements : tuple of LayerPlacement
        In the order of the layers given.
    pool : tuple of (int, int)
        ``(base, macros)`` shared by the streamed layers; ``(K, 0)`` if every layer is resident.
    tokens : int
        Tokens per run the chunks were sized for.
    """
    chip: ChipConfig
    placements: tuple
    pool: tuple
    tokens: int

    @property
    def resident_macros(self) -> int:
        """Macros holding resident layers."""
        return sum(p.macros for p in self.placements if p.resident)


def place_model(chip: ChipConfig, layers, tokens: int = 1, *, pool: int | None = None) -> ModelPlan:
    """Decide which of ``layers`` are resident (and on which macros) and which stream.

    Layers are made resident smallest first (fewest tiles), each on macros of its own, as long
    as they fit beside a pool of ``pool`` macros for the streamed ones (default: 0 if every
    layer fits, else ``min(2, K)``). The streamed layers all use the pool, one after the
    other; one that needs fewer macros than the pool has takes the next free ones of it,
    round-robin, so that consecutive small layers (a Monarch factor's blocks) use different
    macros. A :func:`packable` resident layer (dense, at most half a macro's rows) first
    tries the free rows of macros that already hold such layers (``LayerPlacement.row0``):
    one macro then holds several small layers, each computing in passes of its own.

    Parameters
    ----------
    chip : ChipConfig
    layers : sequence of ChipLayer
    tokens : int
        Tokens per run (1 for decode, T for prefill): sizes the chunks.
    pool : int, optional
        Macros kept for the streamed layers.

    Raises
    ------
    ValueError
        For an empty list, a non-positive ``tokens``, a pool outside ``0 .. K`` or a layer
        whose pattern the macro does not run.
    """
    layers = list(layers)
    if not layers or not all(isinstance(layer, ChipLayer) for layer in layers):
        raise ValueError("layers must be a non-empty sequence of ChipLayer")
    tokens = _positive("tokens", tokens)
    cfg = chip.macro
    tiles = [len(layer.mapping(cfg).tiles) for layer in layers]
    if pool is None:
        pool = 0 if sum(tiles) <= chip.macros else min(2, chip.macros)
    if not isinstance(pool, numbers.Integral) or not 0 <= pool <= chip.macros:
        raise ValueError(f"pool must be an integer from 0 to {chip.macros}, not {pool!r}")
    free = chip.macros - pool
    base = 0
    resident_at: dict[int, tuple] = {}      # layer -> (base, row0)
    rows_used: dict[int, int] = {}          # macro holding packable layers -> rows they use
    for index in sorted(range(len(layers)), key=lambda i: (tiles[i], i)):
        small = packable(cfg, layers[index])
        spot = _shared_rows(rows_used, tiles[index], layers[index].k,
                            cfg.pass_inputs()) if small else None
        if spot is None and tiles[index] <= free:
            spot = (base, 0)
            base += tiles[index]
            free -= tiles[index]
        if spot is None:
            continue
        resident_at[index] = spot
        if small:
            for macro in range(spot[0], spot[0] + tiles[index]):
                rows_used[macro] = spot[1] + layers[index].k
    streamed = len(resident_at) < len(layers)
    if streamed and chip.macros - base < 1:
        raise ValueError("no macro is left for the streamed layers; give a pool of at least 1")
    pool_base, pool_macros = (base, chip.macros - base) if streamed else (chip.macros, 0)
    placements = []
    cursor = 0          # where the next small streamed layer starts in the pool
    for index, layer in enumerate(layers):
        if index in resident_at:
            at, row0 = resident_at[index]
            placements.append(place_layer(chip, layer, at, tiles[index], tokens, row0=row0))
            continue
        placement = place_layer(chip, layer, pool_base, pool_macros, tokens, streamed=True)
        used = placement.macros
        if used < pool_macros:
            # A layer too small for the whole pool goes on the next macros of it, so that
            # consecutive small layers (a Monarch factor's blocks) use different macros and
            # one's loads overlap another's compute.
            cursor = cursor if cursor + used <= pool_macros else 0
            placement = place_layer(chip, layer, pool_base + cursor, used, tokens,
                                    streamed=True)
            cursor += used
        placements.append(placement)
    return ModelPlan(chip=chip, placements=tuple(placements), pool=(pool_base, pool_macros),
                    tokens=tokens)


def _shared_rows(rows_used: dict, macros: int, k: int, rows: int):
    """``(base, row0)``: the first run of ``macros`` macros already holding small layers
    whose free rows (above the highest used on any of them) take ``k`` more, or None."""
    for start in sorted(rows_used):
        run = range(start, start + macros)
        if all(m in rows_used for m in run):
            row0 = max(rows_used[m] for m in run)
            if row0 + k <= rows:
                return start, row0
    return None


@dataclass(frozen=True)
class ChipRead:
    """One READ of a chip trace: ``block`` of layer ``layer`` (the beats are the group's sums)."""
    layer: int
    block: ReadBlock


def chip_ops(placement: LayerPlacement, tokens: int, *, load: bool = True,
             compute: bool = True, index: int = 0):
    """The commands of one layer, in dispatch order, without their data.

    Parameters
    ----------
    placement : LayerPlacement
    tokens : int
        Tokens the compute phase runs, in chunks of ``placement.chunk``.
    load : bool
        Include a resident layer's one-time LOAD_Ws (streamed layers load in their loop).
    compute : bool
        Include the CONFIG and the token loop.
    index : int
        The layer's index, written into the data references and the reads.

    Returns
    -------
    ops : list of (target, span, Command, ref)
        ``ref`` is None or a data reference: ``("w", index, nt, kt, row, count)`` for weight
        rows ``row .. row+count-1`` of tile ``(nt, kt)``; ``("a", index, k_lo, k_hi, t0,
        count)`` for the entries of K tiles ``k_lo .. k_hi-1`` (K tile major), tokens ``t0 ..
        t0+count-1``.
    reads : list of ChipRead
        The READs in order.
    """
    tokens = _positive("tokens", tokens)
    p, mapping = placement, placement.mapping
    cfg = mapping.config
    ranges = [load_ranges(cfg, mapping.pattern, inputs) for inputs in k_tile_inputs(mapping)]
    emit = _Emitter(p, index, ranges)
    if p.resident and load:
        for nt in range(mapping.n_tiles):
            for kt in range(mapping.k_tiles):
                emit.load_tile(p.macro_of(nt, kt), nt, kt)
    if compute:
        emit.ops.append((p.base, p.macros, config_command(mapping.pattern), None))
        for t0 in range(0, tokens, p.chunk):
            emit.chunk(t0, min(p.chunk, tokens - t0))
    return emit.ops, emit.reads


class _Emitter:
    """Appends one layer's commands (see :func:`chip_ops`)."""

    def __init__(self, placement: LayerPlacement, index: int, ranges):
        self.p, self.index = placement, index
        self.command = CommandCache()
        # The LOAD_Ws of each K tile and every macro's K tiles, built once.
        self.loads = [[(self.command(Opcode.LOAD_W, row=placement.row0 + row, count=rows),
                        row, rows) for row, rows in tile_ranges] for tile_ranges in ranges]
        self.owned = [placement.owned(j) for j in range(placement.group)]
        self.computes: dict = {}
        self.ops: list = []
        self.reads: list = []

    def load_tile(self, macro: int, nt: int, kt: int) -> None:
        for cmd, row, rows in self.loads[kt]:
            self.ops.append((macro, 1, cmd, ("w", self.index, nt, kt, row, rows)))

    def chunk(self, t0: int, count: int) -> None:
        """The commands of one chunk of ``count`` tokens from ``t0``."""
        p, command = self.p, self.command
        k_tiles = p.mapping.k_tiles
        if p.acts == "broadcast":
            self.ops.append((p.base, p.macros,
                             command(Opcode.LOAD_A, addr=0, count=count * k_tiles),
                             ("a", self.index, 0, k_tiles, t0, count)))
        for nt in range(p.mapping.n_tiles):
            g = nt % p.groups
            # Round-robin over the group's macros, one K tile each per round: while the
            # weight port loads the others, a macro computes the tile it just got.
            for i in range(p.max_owned):
                for j, own in enumerate(self.owned):
                    if i < len(own):
                        self.tile(p.base + g * p.group + j, nt, own, i, t0, count)
            self.ops.append((p.base + g * p.group, p.group,
                             command(Opcode.READ, addr=0, count=count), None))
            tile = p.mapping.tiles[nt * k_tiles]
            self.reads.append(ChipRead(self.index, ReadBlock(t0, count, tile.n0, tile.n1)))

    def tile(self, macro: int, nt: int, own: range, i: int, t0: int, count: int) -> None:
        """Tile ``(nt, own[i])`` on ``macro``: load (streamed), activations (per tile),
        compute, accumulating over the macro's K tiles."""
        p, command = self.p, self.command
        kt = own[i]
        if not p.resident:
            self.load_tile(macro, nt, kt)
        if p.acts == "own" and i == 0 and nt < p.groups:
            # The chunk's activations of the macro's K tiles, next to its first tile rather
            # than all up front: the activation port then works beside the weight port.
            self.ops.append((macro, 1, command(Opcode.LOAD_A, addr=0, count=count * len(own)),
                             ("a", self.index, own.start, own.stop, t0, count)))
        if p.acts == "per_tile":
            self.ops.append((macro, 1, command(Opcode.LOAD_A, addr=0, count=count),
                             ("a", self.index, kt, kt + 1, t0, count)))
            act_addr = 0
        else:
            act_addr = (kt - (0 if p.acts == "broadcast" else own.start)) * count
        key = (act_addr, count, i > 0)
        compute = self.computes.get(key)
        if compute is None:
            compute = self.computes[key] = command(Opcode.COMPUTE, act_addr=act_addr,
                                                   acc_addr=0, count=count,
                                                   accumulate=int(i > 0))
        self.ops.append((macro, 1, compute, None))


@dataclass(kw_only=True)
class ChipSchedule:
    """A chip trace of one or several layers, with what is needed to read its results back.

    Follows the :class:`~sparsecim.sw.schedule.Schedule` protocol but for the chip: ``trace``
    is a chip trace and :meth:`assemble` returns one output per layer.

    Attributes
    ----------
    trace
        The chip trace (``ChipTrace``): the resident layers' LOAD_Ws (if ``load``), then
        each layer in turn (its CONFIG, then its chunks), END last.
    plan : ModelPlan
    tokens : int
        Tokens every layer computes.
    reads : list of ChipRead
        The READ commands in trace order.
    load : bool
        Whether the resident layers' one-time loads are in the trace.
    """
    trace: object
    plan: ModelPlan
    tokens: int
    reads: list
    load: bool = True
    ops: list = field(default_factory=list, repr=False)
    w_raw: list = field(default_factory=list, repr=False)
    a_raw: list = field(default_factory=list, repr=False)

    @property
    def chunk(self) -> int:
        """Tokens per chunk of the first layer (each layer has its own, ``placement.chunk``)."""
        return self.plan.placements[0].chunk

    @property
    def result_beats(self) -> int:
        """Result beats the trace produces (every READ's ``count``)."""
        return sum(r.block.count for r in self.reads)

    def assemble(self, results: np.ndarray) -> list[np.ndarray]:
        """Chip result beats (``(result_beats, cols)``, summed lanes) to each layer's
        ``(tokens, n)`` ``int64`` output.

        Raises
        ------
        ValueError
            If ``results`` is not of shape ``(result_beats, cols)``.
        """
        results = np.asarray(results)
        cols = self.plan.chip.macro.cols
        expected = (self.result_beats, cols)
        if results.shape != expected:
            raise ValueError(f"results must have shape {expected}, not {results.shape}")
        outs = [np.zeros((self.tokens, p.layer.n), dtype=np.int64) for p in self.plan.placements]
        beat = 0
        for read in self.reads:
            b = read.block
            outs[read.layer][b.t0:b.t0 + b.count, b.n0:b.n1] = \
                results[beat:beat + b.count, :b.n1 - b.n0]
            beat += b.count
        return outs


def _plan_ops(plan: ModelPlan, tokens: int, *, load: bool, compute: bool):
    """Every layer's commands, resident loads first (a load phase), then the layers one
    after the other; END last."""
    ops: list = []
    reads: list = []
    if load:
        for index, p in enumerate(plan.placements):
            if p.resident:
                ops += chip_ops(p, tokens, load=True, compute=False, index=index)[0]
    if compute:
        for index, p in enumerate(plan.placements):
            layer_ops, layer_reads = chip_ops(p, tokens, load=False, compute=True, index=index)
            ops += layer_ops
            reads += layer_reads
    ops.append((0, 1, Command(Opcode.END), None))
    return ops, reads


def _act_bytes(cfg: MacroConfig, mapping: TileMapping, x: np.ndarray,
               row0: int = 0) -> np.ndarray:
    """Activation beats of every (K tile, token) entry: ``uint8`` ``(k_tiles, tokens ·
    act_beats, nbytes)``, each entry holding its tile's inputs from element ``row0`` on and
    zeros elsewhere."""
    pattern = mapping.pattern
    tokens = x.shape[0]
    inputs = mapping.pass_inputs
    act_beats = cfg.act_beats(*pattern)
    entry = act_beats * cfg.act_lanes
    padded = np.zeros((mapping.k_tiles, tokens, entry), dtype=x.dtype)
    for kt in range(mapping.k_tiles):
        block = x[:, kt * inputs:(kt + 1) * inputs]
        padded[kt, :, row0:row0 + block.shape[1]] = block
    layout = act_beat_layout(cfg)
    nbytes = beat_bytes(layout.size)
    raw = pack_rows(lambda values: pack_beat_bytes(layout, values),
                     padded.reshape(-1, cfg.act_lanes), nbytes)
    return raw.reshape(mapping.k_tiles, tokens * act_beats, nbytes)


def _op_data(chip: ChipConfig, ref, w_raw, a_raw, patterns) -> np.ndarray | None:
    """The data beats (bytes, one row a beat) of a data reference of :func:`chip_ops`."""
    if ref is None:
        return None
    if ref[0] == "w":
        _, layer, nt, kt, row, rows = ref
        return w_raw[layer][nt, kt, row:row + rows]
    _, layer, k_lo, k_hi, t0, count = ref
    beats = chip.macro.act_beats(*patterns[layer])
    data = a_raw[layer][k_lo:k_hi, t0 * beats:(t0 + count) * beats]
    return data.reshape(-1, data.shape[-1])


def _make_trace(chip: ChipConfig, ops, meta: dict, w_raw=None, a_raw=None, patterns=()):
    """Encode ``ops`` into a chip trace (``hw.chip_trace.ChipTrace``); data beats from the
    packed arrays (omitted when they are None: a trace for timing only)."""
    from ...hw.chip_trace import ChipTrace
    steps = []
    for word, (_, _, _, ref) in zip(chip_words(chip, ops), ops, strict=True):
        data = None if w_raw is None else _op_data(chip, ref, w_raw, a_raw, patterns)
        steps.append(Step(word, [] if data is None else BeatArray(data)))
    return ChipTrace(chip, steps, meta=meta)


def _plan_meta(plan: ModelPlan, tokens: int) -> dict:
    return {"workload": "chip", "tokens": tokens, "layers": [
        {"name": p.layer.name, "k": p.layer.k, "n": p.layer.n, "pattern": list(p.layer.pattern),
         "base": p.base, "macros": p.macros, "group": p.group, "groups": p.groups,
         "resident": p.resident, "chunk": p.chunk, "acts": p.acts}
        for p in plan.placements]}


def schedule_chip(chip: ChipConfig, layers, xs, ws, *, plan: ModelPlan | None = None,
                  load: bool = True) -> ChipSchedule:
    """Schedule layers with their operands as one chip trace.

    Parameters
    ----------
    chip : ChipConfig
    layers : sequence of ChipLayer
        Shapes and patterns (each ``ws[i]`` must be ``k × n`` and keep the pattern).
    xs, ws : sequences of array_like
        Per layer, activations ``(tokens, k)`` (every layer the same tokens) and weights
        ``(k, n)``, integers in the signed ``act_bits`` / ``weight_bits`` ranges. The layers
        are independent (each has its own ``x``).
    plan : ModelPlan, optional
        Placements (default :func:`place_model` for these layers and tokens).
    load : bool
        Put the resident layers' loads in the trace (False: a trace of the token phase only,
        which expects the weights already in place; for timing).

    Returns
    -------
    ChipSchedule
        Its trace, run on the chip golden model or the RTL, gives result beats that
        :meth:`ChipSchedule.assemble` turns into exactly ``x_i · w_i`` for every layer.

    Raises
    ------
    ValueError
        As :func:`~sparsecim.sw.schedule.schedule_layer` for each operand pair (the message
        names the layer), if the lists differ in length, the tokens differ, or ``plan`` is for
        other layers.
    """
    layers = list(layers)
    xs, ws = list(xs), list(ws)
    if not (len(layers) == len(xs) == len(ws)):
        raise ValueError(f"layers, xs and ws must have the same length, not {len(layers)}, "
                         f"{len(xs)} and {len(ws)}")
    cfg = chip.macro
    checked = []
    for layer, x, w in zip(layers, xs, ws, strict=True):
        try:
            x, w = check_shapes(cfg, x, w)
        except ValueError as exc:
            raise ValueError(f"layer {layer.name}: {exc}") from None
        if (x.shape[1], w.shape[1]) != (layer.k, layer.n):
            raise ValueError(f"layer {layer.name}: w must be {layer.k} × {layer.n}, not "
                             f"{w.shape[0]} × {w.shape[1]}")
        checked.append((x, w))
    tokens = checked[0][0].shape[0]
    if any(x.shape[0] != tokens for x, _ in checked):
        raise ValueError(f"every layer must run the same tokens, not "
                         f"{[x.shape[0] for x, _ in checked]}")
    if plan is None:
        plan = place_model(chip, layers, tokens)
    elif [p.layer for p in plan.placements] != layers:
        raise ValueError("plan must place the layers given, in the same order")
    w_raw, a_raw = [], []
    for p, (x, w) in zip(plan.placements, checked, strict=True):
        try:
            w_raw.append(tile_weight_bytes(cfg, p.mapping, w))
        except ValueError as exc:
            raise ValueError(f"layer {p.layer.name}: {exc}") from None
        a_raw.append(_act_bytes(cfg, p.mapping, x, p.row0))
    ops, reads = _plan_ops(plan, tokens, load=load, compute=True)
    patterns = [p.layer.pattern for p in plan.placements]
    trace = _make_trace(chip, ops, _plan_meta(plan, tokens), w_raw, a_raw, patterns)
    return ChipSchedule(trace=trace, plan=plan, tokens=tokens, reads=reads, load=load, ops=ops,
                        w_raw=w_raw, a_raw=a_raw)


@dataclass(frozen=True)
class LayerFigures:
    """Exact figures of one layer on the chip (:func:`chip_layer_figures`).

    Attributes
    ----------
    layer : ChipLayer
    placement, decode_placement : LayerPlacement
        The placements chosen for the prefill and the decode runs (same macros; the group
        shape and acts mode may differ).
    resident : bool
    macros : int
        Macros the layer uses.
    load : dict or None
        Resident: the chip counters of the one-time load phase (CHIP_COUNTERS), else None.
    load_cycles : int
        ``load["total"]`` (0 when streamed).
    decode : dict
        Chip counters of one token (a trace from reset: CONFIG .. END, loads of a streamed
        layer included), plus ``"macro"``: every macro counter summed over the macros.
    prefill : dict
        The same for ``prefill_tokens`` tokens.
    prefill_tokens : int
    decode_cycles : int
        ``decode["total"]``.
    prefill_cycles_per_token : float
        ``prefill["total"] / prefill_tokens``.
    weight_bytes_per_token : float
        Off-chip bytes per token in decode (``w_load × weight_row_bytes``: weights and
        metadata as the rows carry them); 0 when resident.
    prefill_weight_bytes_per_token : float
    load_bytes : int
        Off-chip bytes of the one-time load (resident), else 0.
    utilization : float
        Cell utilisation: kept weights over the cells of the tiles (the mapping's).
    bound, prefill_bound : str
        What sets the pace of the decode and the prefill run (:meth:`bound_of`):
        ``"bandwidth"`` if the weight port was busy, moving a row or held by the off-chip
        bandwidth credit (``w_load + bw_stall``), in more than half of the run's cycles;
        else ``"compute"`` (the macros' fetches, passes, activation loads and reads). When
        ``bw_stall`` is 0 (``weight_bw >= weight_row_bytes``) a ``"bandwidth"`` layer is held
        by the weight port's one row a cycle rather than by the off-chip memory:
        ``weight_port_busy`` and the counters tell the two apart.
    weight_port_busy, prefill_weight_port_busy : float
        ``(w_load + bw_stall) / total`` of the decode and the prefill run.
    act_port_busy, prefill_act_port_busy : float
        ``a_load / total``: near 1 the activation port (one beat a cycle) sets the pace
        whatever ``bound`` says (a streamed layer whose activations are re-sent per output
        tile, ``"per_tile"``).
    """
    layer: ChipLayer
    placement: LayerPlacement
    decode_placement: LayerPlacement
    resident: bool
    macros: int
    load: dict | None
    decode: dict
    prefill: dict
    prefill_tokens: int
    weight_row_bytes: int
    utilization: float

    @property
    def load_cycles(self) -> int:
        return self.load["total"] if self.load else 0

    @property
    def load_bytes(self) -> int:
        return self.load["w_load"] * self.weight_row_bytes if self.load else 0

    @property
    def decode_cycles(self) -> int:
        return self.decode["total"]

    @property
    def prefill_cycles_per_token(self) -> float:
        return self.prefill["total"] / self.prefill_tokens

    @property
    def weight_bytes_per_token(self) -> float:
        return self.decode["w_load"] * self.weight_row_bytes

    @property
    def prefill_weight_bytes_per_token(self) -> float:
        return self.prefill["w_load"] * self.weight_row_bytes / self.prefill_tokens

    @staticmethod
    def port_busy(counters: dict) -> float:
        """Share of the cycles the weight port moved a row or was held by the credit."""
        return (counters["w_load"] + counters["bw_stall"]) / counters["total"]

    @staticmethod
    def bound_of(counters: dict) -> str:
        """``"bandwidth"`` or ``"compute"`` for chip counters (see the class docstring)."""
        busy = counters["w_load"] + counters["bw_stall"]
        return "bandwidth" if 2 * busy > counters["total"] else "compute"

    @property
    def weight_port_busy(self) -> float:
        return self.port_busy(self.decode)

    @property
    def prefill_weight_port_busy(self) -> float:
        return self.port_busy(self.prefill)

    @property
    def act_port_busy(self) -> float:
        return self.decode["a_load"] / self.decode["total"]

    @property
    def prefill_act_port_busy(self) -> float:
        return self.prefill["a_load"] / self.prefill["total"]

    @property
    def bound(self) -> str:
        return self.bound_of(self.decode)

    @property
    def prefill_bound(self) -> str:
        return self.bound_of(self.prefill)

    def to_dict(self) -> dict:
        """Plain figures for JSON reports."""
        p, d = self.placement, self.decode_placement
        return {
            "name": self.layer.name, "k": self.layer.k, "n": self.layer.n,
            "pattern": f"{self.layer.pattern[0]}:{self.layer.pattern[1]}",
            "resident": self.resident, "macros": self.macros, "base": p.base,
            "prefill_placement": {"group": p.group, "groups": p.groups, "acts": p.acts,
                                  "chunk": p.chunk},
            "decode_placement": {"group": d.group, "groups": d.groups, "acts": d.acts},
            "load_cycles": self.load_cycles, "load_bytes": self.load_bytes,
            "decode_cycles": self.decode_cycles, "prefill_tokens": self.prefill_tokens,
            "prefill_cycles_per_token": self.prefill_cycles_per_token,
            "weight_bytes_per_token": self.weight_bytes_per_token,
            "prefill_weight_bytes_per_token": self.prefill_weight_bytes_per_token,
            "utilization": self.utilization, "bound": self.bound,
            "prefill_bound": self.prefill_bound, "weight_port_busy": self.weight_port_busy,
            "prefill_weight_port_busy": self.prefill_weight_port_busy,
            "act_port_busy": self.act_port_busy,
            "prefill_act_port_busy": self.prefill_act_port_busy,
            "load": self.load, "decode": self.decode, "prefill": self.prefill,
        }


@functools.lru_cache(maxsize=1 << 14)
def _encode_chip(chip: ChipConfig, cmd: Command, target: int, span: int) -> int:
    """:func:`encode_chip`, remembered (an Amaranth constant per command costs
    milliseconds; a model's layers repeat a few hundred distinct words)."""
    return encode_chip(chip, cmd, target=target, span=span)


def chip_words(chip: ChipConfig, ops) -> list[int]:
    """The chip command words of ``ops``."""
    known: dict = {}        # by identity first: the ops repeat the same few Command objects
    words = []
    for target, span, cmd, _ in ops:
        key = (target, span, id(cmd))
        word = known.get(key)
        if word is None:
            word = known[key] = _encode_chip(chip, cmd, target, span)
        words.append(word)
    return words


def _price(chip: ChipConfig, ops) -> dict:
    """Chip counters of ``ops`` from the chip event model (exact, every stream ready), with
    the macros' counters summed under ``"macro"``.

    Raises
    ------
    RuntimeError
        If the commands do not halt cleanly (a scheduler bug, never a user error).
    """
    from ..chip_timing import chip_counters
    timing = chip_counters(chip, chip_words(chip, ops))
    if timing.counters is None:
        raise RuntimeError(f"scheduled commands did not halt cleanly: {timing.error}")
    summed = dict.fromkeys(timing.macro_counters[0], 0)
    for counters in timing.macro_counters:
        for name, value in counters.items():
            summed[name] += value
    return dict(timing.counters, macro=summed)


_END = (0, 1, Command(Opcode.END), None)


def _best_run(chip: ChipConfig, layer: ChipLayer, base: int, macros: int, tokens: int,
              streamed: bool) -> tuple[LayerPlacement, dict]:
    """The candidate placement with the fewest cycles for ``tokens`` tokens (the first of
    equals) and its counters."""
    best = None
    for placement in layer_candidates(chip, layer, base, macros, tokens, streamed=streamed):
        counters = _price(chip, chip_ops(placement, tokens, load=False)[0] + [_END])
        if best is None or counters["total"] < best[1]["total"]:
            best = (placement, counters)
    return best


def chip_layer_figures(chip: ChipConfig, layer: ChipLayer, *, base: int = 0,
                       macros: int | None = None, prefill_tokens: int = 128,
                       streamed: bool = False) -> LayerFigures:
    """Exact figures of ``layer`` placed alone on macros ``base .. base+macros-1`` (default:
    the rest of the chip), from the chip cycle model on this module's commands.

    Runs are priced from reset to END: the resident load phase (if resident), one decode
    token and ``prefill_tokens`` tokens, the last two for every candidate placement
    (:func:`layer_candidates`), keeping the fastest of each. A resident layer's token runs
    start with its weights in place (their loads are the load phase).

    Raises
    ------
    ValueError
        As :func:`place_layer`.
    """
    prefill_tokens = _positive("prefill_tokens", prefill_tokens)
    macros = chip.macros - base if macros is None else macros
    decode_p, decode = _best_run(chip, layer, base, macros, 1, streamed)
    prefill_p, prefill = _best_run(chip, layer, base, macros, prefill_tokens, streamed)
    load = None
    if prefill_p.resident:
        load = _price(chip, chip_ops(prefill_p, 1, load=True, compute=False)[0] + [_END])
    return LayerFigures(layer=layer, placement=prefill_p, decode_placement=decode_p,
                        resident=prefill_p.resident, macros=prefill_p.macros, load=load,
                        decode=decode, prefill=prefill, prefill_tokens=prefill_tokens,
                        weight_row_bytes=chip.weight_row_bytes,
                        utilization=prefill_p.mapping.utilization)


def load_phase(plan: ModelPlan) -> dict | None:
    """Chip counters (and summed macro counters under ``"macro"``) of loading every resident
    layer of ``plan`` at once, from reset to END: the model's exact one-time load (the
    layers' own ``load_cycles`` price each alone). None if no layer is resident."""
    if not any(p.resident for p in plan.placements):
        return None
    ops, _ = _plan_ops(plan, 1, load=True, compute=False)
    return _price(plan.chip, ops)


def model_figures(chip: ChipConfig, layers, *, prefill_tokens: int = 128,
                  plan: ModelPlan | None = None) -> list[LayerFigures]:
    """:func:`chip_layer_figures` of every layer of a model as :func:`place_model` places them;
    each distinct (shape, pattern, placement size) is priced once.

    Returns
    -------
    list of LayerFigures
        In the order of ``layers``.
    """
    layers = list(layers)
    plan = plan or place_model(chip, layers, prefill_tokens)
    priced: dict = {}
    out = []
    for p in plan.placements:
        span = p.macros if p.resident else plan.pool[1]
        key = (p.layer.shape_key, p.resident, span)
        figures = priced.get(key)
        if figures is None:
            figures = priced[key] = chip_layer_figures(
                chip, p.layer, base=p.base, macros=span, prefill_tokens=prefill_tokens,
                streamed=not p.resident)
        # Timing does not depend on which macros: the same figures under this layer's name
        # and placement.
        out.append(dataclasses.replace(
            figures, layer=p.layer,
            placement=dataclasses.replace(figures.placement, layer=p.layer, base=p.base),
            decode_placement=dataclasses.replace(figures.decode_placement, layer=p.layer,
                                                 base=p.base)))
    return out



@dataclass(kw_only=True)
class ChipMonarchSchedule:
    """A Monarch layer on the chip (:func:`schedule_monarch_chip`): both factors' block
    groups as layers of one :class:`ChipSchedule`.

    Attributes
    ----------
    schedule : ChipSchedule
        The first factor's groups (layers ``0 .. r_groups-1``), then the second's.
    b, s, tokens, shift : int
    r_group, l_group : int
        Blocks per group (per layer) of each factor.
    """
    schedule: ChipSchedule
    b: int
    s: int
    tokens: int
    shift: int
    r_group: int
    l_group: int

    @property
    def trace(self):
        return self.schedule.trace

    @property
    def result_beats(self) -> int:
        return self.schedule.result_beats

    def assemble(self, results: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Chip result beats to ``(u, z)``: the first factor's outputs ``(tokens, b, s)``
        (block ``i``, output ``c``, before requantization) and the layer's ``(tokens, s, s)``
        (block ``j``, output ``c``), as :func:`~sparsecim.sw.schedule.monarch_reference`."""
        outs = self.schedule.assemble(results)
        r_layers = -(-self.b // self.r_group)
        u = np.concatenate(outs[:r_layers], axis=1).reshape(self.tokens, self.b, self.s)
        z = np.concatenate(outs[r_layers:], axis=1).reshape(self.tokens, self.s, self.s)
        return u, z


def _block_groups(cfg: MacroConfig, blocks: np.ndarray) -> tuple[int, list[np.ndarray]]:
    """``(group, weights)``: ``(count, out, in)`` blocks in groups by the latency mapping
    (SparseMap, :func:`~sparsecim.sw.blockdiag_map.map_latency`) on one dense tile of the
    macro, ``pass_inputs() × cols`` (all sub-macros as one array), widened to hold at least one
    block (a larger block is a group of its own, tiled like any layer). Each array of the
    mapping is a group of ``group`` blocks (its units per array; the last group may hold
    fewer), returned as its ``k × n`` weight matrix cut to its blocks: the blocks on its
    diagonal, zeros around them (stored, they cost cells, not correctness)."""
    count, size_out, size_in = blocks.shape
    mapping = map_latency(BlockDiagonal(count, size_in, size_out),
                          max(cfg.pass_inputs(), size_in), max(cfg.cols, size_out))
    weights = []
    for ps in mapping.passes:
        placed = [mapping.placements[n] for n in ps.placements]
        w = np.zeros((max(p.row0 + p.in1 - p.in0 for p in placed),
                      max(p.col0 + p.out1 - p.out0 for p in placed)), dtype=np.int64)
        for p in placed:
            w[p.row0:p.row0 + p.in1 - p.in0, p.col0:p.col0 + p.out1 - p.out0] = \
                blocks[p.block, p.out0:p.out1, p.in0:p.in1].T
        weights.append(w)
    return mapping.units_per_array, weights


def schedule_monarch_chip(chip: ChipConfig, x, r_blocks, l_blocks, shift: int, *,
                          plan: ModelPlan | None = None) -> ChipMonarchSchedule:
    """A Monarch layer (:mod:`~sparsecim.sw.schedule.monarch`'s notation) with its blocks
    split over the chip's macros.

    Each factor's blocks are cut into groups of as many blocks as sit on the diagonal of one
    tile (the latency mapping's arrays, :func:`_block_groups`); a group is a block-diagonal
    layer placed like any other (:func:`place_model`: resident on macros of its own while they
    fit, else streamed), so the blocks of a factor run on different macros at once. The middle
    requantization and transpose cannot stay on one macro when the blocks are spread (every
    second-factor block needs an output of every first-factor block): the first factor's
    READs leave the chip, and the second factor's activations are ``requantize(u)``
    transposed, as the global buffer would hold them. The scheduler computes that ``u`` in
    numpy to build the second factor's activation beats; :meth:`ChipMonarchSchedule.assemble`
    returns the chip's own ``u`` and ``z`` for checking against
    :func:`~sparsecim.sw.schedule.monarch_reference`.

    Raises
    ------
    ValueError
        If the blocks are not ``(b, s, s)`` and ``(s, s, b)``, ``x`` is not ``(tokens, b·s)``,
        a value is out of range, or ``shift`` is outside ``0 .. acc_bits-1``.
    """
    cfg = chip.macro
    r_blocks, l_blocks, b, s = check_blocks(r_blocks, l_blocks)
    if not isinstance(shift, numbers.Integral) or not 0 <= shift < cfg.acc_bits:
        raise ValueError(f"shift must be an integer in 0..{cfg.acc_bits - 1}, not {shift!r}")
    x, _ = check_shapes(cfg, x, np.zeros((b * s, 1), dtype=np.int8))
    tokens = x.shape[0]
    r_group, r_ws = _block_groups(cfg, r_blocks)
    l_group, l_ws = _block_groups(cfg, l_blocks)
    # The global buffer's view of the middle: requantized first-factor outputs, transposed.
    u = np.einsum("ico,tio->tic", r_blocks.astype(np.int64),
                  x.astype(np.int64).reshape(tokens, b, s))
    v = requantize(cfg, u, int(shift)).transpose(0, 2, 1).reshape(tokens, s * b)
    layers, xs = [], []
    for q, w in enumerate(r_ws):
        layers.append(ChipLayer(f"monarch.R{q}", w.shape[0], w.shape[1]))
        xs.append(x[:, q * r_group * s:q * r_group * s + w.shape[0]])
    for q, w in enumerate(l_ws):
        layers.append(ChipLayer(f"monarch.L{q}", w.shape[0], w.shape[1]))
        xs.append(v[:, q * l_group * b:q * l_group * b + w.shape[0]])
    schedule = schedule_chip(chip, layers, xs, r_ws + l_ws, plan=plan)
    return ChipMonarchSchedule(schedule=schedule, b=b, s=s, tokens=tokens, shift=int(shift),
                               r_group=r_group, l_group=l_group)
