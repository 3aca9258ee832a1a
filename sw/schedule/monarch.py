"""Scheduling a two-factor block-diagonal (Monarch) layer as one trace, in three mappings.

The layer, for one token ``x`` of ``b·s`` inputs::

    u_i = R_i · x_i                          i = 0 .. b-1   (first factor, blocks s × s)
    v   = requantize(u), then transposed:    v_j[i] = u_i[j]  (Monarch's middle permutation)
    z_j = L_j · v_j                          j = 0 .. s-1   (second factor, blocks s × b)

so ``R`` has ``b`` blocks of ``s × s`` and ``L`` has ``s`` blocks of ``s × b``; the square
Monarch case is ``s = b``. ``R_i`` and ``L_j`` are given as ``(out, in)`` matrices like a
PyTorch Linear. The result is ``z`` as ``(tokens, s, s)`` int64 (block ``j``, output ``c``); a
caller's output permutation is an index map over it (:meth:`MonarchSchedule.assemble` leaves it
to the caller, it moves no data). Every mapping runs the whole layer, both factors and the
requantization between them, as one trace with no host round trip: the intermediate goes from
the accumulator to the activation buffer by MOVE.

Mappings (arXiv 2510.11192; ``mapping=`` of :func:`schedule_monarch`)
--------------------------------------------------------------------
An *array* is a sub-macro (``rows × cols``); a *load* is one weight image of the whole macro
(LOAD_W of all ``rows × P`` rows); CONFIG ``split = log2(P)`` keeps the P sub-macros apart, so a
pass computes each sub-macro separately into accumulator bank ``σ``. A block of ``in × out``
sits on row-block ``w`` (rows ``w·in ..``) and column-block ``cb`` (columns ``cb·out ..``) of a
sub-macro, weights ``W[w·in + r, cb·out + c] = B[c, r]``, zeros around it. Latency and capacity
take these placements (load, pass, sub-macro ``σ``, row slot ``w``, column slot ``cb``) from
:func:`~sparsecim.sw.blockdiag_map.map_monarch`, the placements the paper comparison counts,
bound to the macro's geometry; :attr:`MonarchSchedule.placements` reports them.

``"latency"`` (SparseMap)
    ``kd = min(rows // in, cols // out)`` blocks on the diagonal of each sub-macro
    (``cb = w``), ``kd·P`` blocks per load, and all of them fire in the load's one pass. Fewest
    passes; one load per pass.
``"capacity"`` (DenseMap)
    ``kr·kc`` blocks per sub-macro (``kr = rows // in``, ``kc = cols // out``), row-block by
    row-block: block diagonal ``d`` at row-block ``w``, column-block ``(w + d) mod kc`` (for
    square blocks ``k = rows / s`` and ``k²`` blocks). Executed block by block: a pass feeds
    one block per sub-macro, its inputs on its row-block and zeros on every other row of that
    sub-macro, so the other blocks of its row-block compute garbage in their own
    column-blocks, which nothing reads.
    The block's outputs come out rotated to column-block ``(w + d) mod kc``; that is undone by
    address generation: the MOVE lane window that carries them on starts at that column-block,
    and :meth:`MonarchSchedule.assemble` reads the second factor's outputs there. Fewest
    loads (when ``b = s`` both factors share loads, so a small layer is loaded once); ``kr·kc``
    times the passes per load of ``"latency"``.
``"linear"`` (dense baseline)
    Each factor densified into its ``b·s × b·s`` (then ``b·s × s·s``) block-diagonal matrix,
    zeros stored, and tiled by the GEMM tiler (:func:`~sparsecim.sw.mapping.map_dense`, its
    LOAD_W beats packed as :func:`~sparsecim.sw.schedule.schedule_layer` packs them; tiles of
    ``rows·P`` inputs × ``cols`` outputs, split 0, the K tiles of a chunk resident). The first
    GEMM's output tiles stay in the accumulator; a straight MOVE per tile requantizes them into
    one wide activation entry per token, in ``u`` order, and the second GEMM's K tile ``q``
    reads part ``q`` of it. The middle permutation is folded into the densified second factor
    (its row ``i·s + j`` is ``L``'s column ``j·b + i``): a dense layer's input order is free.
    Utilization ``1/b`` per factor (``1/s`` for the second when rectangular).

Address generation instead of data shuffles (latency and capacity): the first factor's inputs
are loaded pass by pass, each block's inputs on its row-block; the middle transpose is a MOVE
per (token, first-factor block ``i``, window): a window of consecutive second-factor blocks
``j0 .. j0+n-1`` that sit on consecutive chunks of ``cols`` elements (chunk ``t`` is sub-macro
``t % P`` of part ``t // P``) of one activation entry, all on the same row-block ``w``; lanes
``cb_i·s + j0 ..`` of block ``i``'s accumulator entry land as row ``w·b + i`` of those chunks,
requantized with the CONFIG ``shift`` (MOVE ``transpose``, ``lane``, ``dst``, ``lanes``); the
second factor's pass reads its part of that entry. Rows no MOVE writes must be zero where the
load has weights (capacity): those entries are zeroed once, at the start of the trace, with
LOAD_A in the widest pattern. Requirements: ``rows == cols``, ``s <= rows``, ``b <= cols``,
``cols² <= max_pass_inputs`` and ``cols >= P``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...hw.config import MacroConfig
from ...hw.isa import (
    Command,
    Mode,
    Opcode,
    act_beat_layout,
    pack_beats,
    pack_weight_rows,
)
from ...hw.trace import BeatArray, Trace
from ..blockdiag_map import MAPPINGS as BLOCK_MAPPINGS
from ..blockdiag_map import BlockDiagonal, BlockMapping, map_monarch
from ..mapping import map_dense
from ..reference import check_int_matrix
from .gemm import tile_weight_bytes
from .steps import build_trace, trace_counters, zero_entries

__all__ = ["MAPPINGS", "MonarchSchedule", "MonarchCost", "schedule_monarch",
           "monarch_reference", "monarch_cost"]

#: The mappings :func:`schedule_monarch` knows (those of
#: :data:`sparsecim.sw.blockdiag_map.MAPPINGS`), the scheduler's default first and the
#: densified baseline last.
MAPPINGS = (*BLOCK_MAPPINGS[1:], BLOCK_MAPPINGS[0])


@dataclass(kw_only=True)
class MonarchSchedule:
    """The trace of one Monarch layer and how to read its result beats.

    Attributes
    ----------
    trace : Trace
        CONFIG first, END last; every command legal; data beats exactly consumed.
    tokens, b, s : int
        Tokens, first-factor blocks, block size.
    mapping : str
        One of :data:`MAPPINGS`.
    result_map : ndarray
        ``(tokens, s, s, 2)``: for output ``(t, j, c)`` the result beat and lane that hold it.
    result_beats : int
        Result beats the trace produces.
    chunk : int
        Tokens per chunk (every chunk reloads the weights).
    loads : int
        Weight images of the whole macro per chunk (one LOAD_W each).
    passes : int
        Compute passes per token (per chunk, every pass runs once per token).
    moves : float
        MOVE commands per token.
    utilization : float
        The layer's weights (``2·b·s²``) over the cells of every load of a chunk.
    placements : tuple of BlockMapping, optional
        Latency and capacity: where every block of the two factors sits
        (:func:`~sparsecim.sw.blockdiag_map.map_monarch`, the placements the trace loads and
        runs); ``None`` for ``"linear"`` (the GEMM tiler's tiles).
    """
    trace: Trace
    tokens: int
    b: int
    s: int
    mapping: str
    result_map: np.ndarray
    result_beats: int
    chunk: int
    loads: int
    passes: int
    moves: float
    utilization: float
    placements: tuple[BlockMapping, BlockMapping] | None = None

    def assemble(self, results: np.ndarray) -> np.ndarray:
        """Result beats, as from the golden model or the RTL, to ``z`` shaped ``(tokens, s,
        s)``: block ``j``, output ``c``.

        Raises
        ------
        ValueError
            If ``results`` is not of shape ``(result_beats, cols)``.
        """
        cfg = self.trace.config
        results = np.asarray(results)
        if results.shape != (self.result_beats, cfg.cols):
            raise ValueError(f"results must have shape {(self.result_beats, cfg.cols)}, "
                             f"not {results.shape}")
        return results[self.result_map[..., 0], self.result_map[..., 1]].astype(np.int64)


def monarch_reference(cfg: MacroConfig, x, r_blocks, l_blocks, shift: int) -> np.ndarray:
    """The layer in plain integer numpy (independent of the trace): ``(tokens, s, s)``."""
    x = np.asarray(x, dtype=np.int64)
    r_blocks = np.asarray(r_blocks, dtype=np.int64)
    l_blocks = np.asarray(l_blocks, dtype=np.int64)
    b, s, _ = r_blocks.shape
    tokens = x.shape[0]
    u = np.einsum("ico,tio->tic", r_blocks, x.reshape(tokens, b, s))   # (t, block i, out c)
    if shift:
        u = (u + (1 << (shift - 1))) >> shift
    v = np.clip(u, -(2 ** (cfg.act_bits - 1)), 2 ** (cfg.act_bits - 1) - 1)
    v = v.transpose(0, 2, 1)                                             # (t, block j, in i)
    return np.einsum("jci,tji->tjc", l_blocks, v)


def check_blocks(r_blocks, l_blocks) -> tuple[np.ndarray, np.ndarray, int, int]:
    """``(r_blocks, l_blocks, b, s)``: the two factors as arrays, checked to be ``(b, s, s)``
    and ``(s, s, b)`` (a one-line ``ValueError`` naming the shape otherwise)."""
    r_blocks = np.asarray(r_blocks)
    l_blocks = np.asarray(l_blocks)
    if r_blocks.ndim != 3 or r_blocks.shape[1] != r_blocks.shape[2]:
        raise ValueError(f"r_blocks must have shape (b, s, s), not {r_blocks.shape}")
    b, s, _ = r_blocks.shape
    if l_blocks.shape != (s, s, b):
        raise ValueError(f"l_blocks must have shape (s, s, b) = {(s, s, b)}, "
                         f"not {l_blocks.shape}")
    return r_blocks, l_blocks, b, s


def _check(cfg: MacroConfig, x, r_blocks, l_blocks, shift, mapping):
    if mapping not in MAPPINGS:
        raise ValueError(f"mapping must be one of {', '.join(MAPPINGS)}, not {mapping!r}")
    if mapping != "linear" and cfg.rows != cfg.cols:
        raise ValueError(f"a Monarch layer needs rows == cols, not {cfg.rows} and {cfg.cols}")
    r_blocks, l_blocks, b, s = check_blocks(r_blocks, l_blocks)
    if mapping == "linear":
        most = cfg.max_pass_inputs
        if not 1 <= b * s <= most:
            raise ValueError(f"the linear mapping keeps u (b·s values) in one activation "
                             f"entry: b·s must be at most {most}, not {b * s}")
    else:
        if not 1 <= s <= cfg.rows or not 1 <= b <= cfg.cols:
            raise ValueError(f"blocks must satisfy 1 <= s <= {cfg.rows} and 1 <= b <= "
                             f"{cfg.cols}, not s={s}, b={b}")
        if cfg.cols * cfg.cols > cfg.max_pass_inputs:
            raise ValueError(f"the transposing MOVE needs cols² <= max_pass_inputs, not "
                             f"{cfg.cols}² > {cfg.max_pass_inputs}")
        if cfg.cols < cfg.submacros:
            raise ValueError(f"an activation entry must hold a part per sub-macro chunk: cols "
                             f"must be at least P = {cfg.submacros}, not {cfg.cols}")
    if not 0 <= shift < cfg.acc_bits:
        raise ValueError(f"shift must be in 0..{cfg.acc_bits - 1}, not {shift}")
    x = check_int_matrix("x", x, cfg.act_bits)
    if x.shape[1] != b * s:
        raise ValueError(f"x must have b·s = {b * s} columns, not {x.shape[1]}")
    if x.shape[0] < 1:
        raise ValueError(f"x must have at least one token, not {x.shape[0]}")
    for name, blocks in (("r_blocks", r_blocks), ("l_blocks", l_blocks)):
        check_int_matrix(name, blocks.reshape(-1, blocks.shape[-1]), cfg.weight_bits)
    return x, r_blocks.astype(np.int64), l_blocks.astype(np.int64)


def schedule_monarch(cfg: MacroConfig, x, r_blocks, l_blocks, shift: int,
                     mapping: str = "latency") -> MonarchSchedule:
    """Schedule the Monarch layer (module docstring) for ``x`` (tokens × b·s).

    Parameters
    ----------
    cfg : MacroConfig
    x : array_like
        ``(tokens, b·s)`` INT activations.
    r_blocks : array_like
        ``(b, s, s)``: block ``i`` of the first factor, ``(out, in)``.
    l_blocks : array_like
        ``(s, s, b)``: block ``j`` of the second factor, ``(out, in)``.
    shift : int
        Requantization shift between the factors.
    mapping : str
        ``"latency"`` (default), ``"capacity"`` or ``"linear"`` (module docstring).

    Returns
    -------
    MonarchSchedule
        Its trace, run on the golden model or the RTL, gives result beats that
        :meth:`MonarchSchedule.assemble` turns into exactly :func:`monarch_reference`.

    Raises
    ------
    ValueError
        For an unknown mapping, shapes the mapping cannot hold (named), values out of range,
        a bad shift, or buffers too shallow for one token.
    """
    x, r_blocks, l_blocks = _check(cfg, x, r_blocks, l_blocks, shift, mapping)
    if mapping == "linear":
        return _schedule_linear(cfg, x, r_blocks, l_blocks, shift)
    return _schedule_blocks(cfg, x, r_blocks, l_blocks, shift, mapping)


# Latency and capacity: the placements of blockdiag_map, loaded and run ----------------------

@dataclass(frozen=True)
class _Window:
    """Second-factor blocks ``j0 .. j0+n-1`` whose inputs sit on consecutive chunks
    ``chunk0 ..`` of L input entry ``entry``, all on rows ``row0 ..`` of their sub-macros:
    one transposing MOVE per (token, first-factor block) writes them."""
    j0: int
    n: int
    entry: int
    chunk0: int
    row0: int


@dataclass(frozen=True)
class _Layout:
    """Where a layer's blocks sit (the two factors' placements) and what follows from it for
    the trace: passes, loads, the L input entries (``ppe`` chunks of ``cols`` per entry) and
    the tokens per chunk."""
    right: BlockMapping
    left: BlockMapping
    loads: int
    ppe: int
    l_entries: int
    chunk: int

    @property
    def r_passes(self) -> int:
        return self.right.macro_passes

    @property
    def l_passes(self) -> int:
        return self.left.macro_passes

    @property
    def l_base(self) -> int:
        """First activation entry of the L inputs (the R inputs take entries 0 ..)."""
        return self.chunk


def _layout(cfg: MacroConfig, b: int, s: int, tokens: int, mapping: str) -> _Layout:
    right, left = map_monarch(mapping, BlockDiagonal(b, s, s), BlockDiagonal(s, b, s), cfg)
    loads = 1 + max(p.load for p in left.placements)
    ppe = cfg.cols // cfg.submacros          # parts of a transposed entry (cols chunks)
    l_entries = -(-left.macro_passes // ppe)  # activation entries per token for the L inputs
    chunk = min(tokens, cfg.acc_depth // max(right.macro_passes, left.macro_passes),
                cfg.act_depth // (1 + l_entries))
    if chunk < 1:
        raise ValueError("the buffers are too shallow for one token of this layer")
    return _Layout(right=right, left=left, loads=loads, ppe=ppe, l_entries=l_entries,
                   chunk=chunk)


def _windows(cfg: MacroConfig, lay: _Layout) -> list[_Window]:
    """The L blocks in windows: consecutive ``j`` on consecutive chunks of one entry (chunk
    ``t`` is sub-macro ``t % P`` of part ``t // P``), one row slot."""
    windows: list[_Window] = []
    for j, p in enumerate(lay.left.placements):
        entry, part = divmod(p.pass_, lay.ppe)
        chunk = part * cfg.submacros + p.sub
        last = windows[-1] if windows else None
        if last and (last.entry, last.row0) == (entry, p.row0) and last.chunk0 + last.n == chunk:
            windows[-1] = _Window(last.j0, last.n + 1, entry, last.chunk0, p.row0)
        else:
            windows.append(_Window(j, 1, entry, chunk, p.row0))
    return windows


def _weight_images(cfg: MacroConfig, lay: _Layout, r_blocks, l_blocks):
    """``(images, occupied)``: one weight image per load, zeros around the blocks, and the
    rows of each (load, sub-macro) that carry weights."""
    images = np.zeros((lay.loads, cfg.weight_rows, cfg.cols), dtype=np.int64)
    occupied = np.zeros((lay.loads, cfg.submacros, cfg.rows), dtype=bool)
    for blocks, mapping in ((r_blocks, lay.right), (l_blocks, lay.left)):
        for p in mapping.placements:
            size_in, size_out = p.in1 - p.in0, p.out1 - p.out0
            r0 = p.sub * cfg.rows + p.row0
            images[p.load, r0:r0 + size_in, p.col0:p.col0 + size_out] = \
                blocks[p.block, p.out0:p.out1, p.in0:p.in1].T
            occupied[p.load, p.sub, p.row0:p.row0 + size_in] = True
    return images, occupied


def _needs_zero(cfg: MacroConfig, lay: _Layout, occupied: np.ndarray) -> bool:
    """Whether an L pass meets a row with weights that no MOVE writes (it must read zero)."""
    written = np.zeros((lay.l_passes, cfg.submacros, cfg.rows), dtype=bool)
    for p in lay.left.placements:
        written[p.pass_, p.sub, p.row0:p.row0 + p.in1 - p.in0] = True
    return any((occupied[p.load, p.sub] & ~written[p.pass_, p.sub]).any()
               for p in lay.left.placements)


def _passes_of_load(lay: _Layout) -> list[list[tuple[str, int]]]:
    """Per load, the factor passes (``("r", q)`` or ``("l", q)``) it runs, in order."""
    out: list[list[tuple[str, int]]] = [[] for _ in range(lay.loads)]
    for name, mapping in (("r", lay.right), ("l", lay.left)):
        for p in mapping.placements:
            if (name, p.pass_) not in out[p.load]:
                out[p.load].append((name, p.pass_))
    return out


def _r_pass(cfg: MacroConfig, lay: _Layout, x_chunk: np.ndarray, q: int) -> list:
    """LOAD_A and COMPUTE of first-factor pass ``q`` for a chunk: each block's inputs on its
    row slot of its sub-macro, zeros elsewhere."""
    count, s = x_chunk.shape[0], lay.right.matrix.block_in
    lanes = np.zeros((count, cfg.act_beats() * cfg.act_lanes), dtype=np.int64)
    for p in lay.right.placements:
        if p.pass_ == q:
            e0 = p.sub * cfg.rows + p.row0
            lanes[:, e0:e0 + s] = x_chunk[:, p.block * s:(p.block + 1) * s]
    words = pack_beats(act_beat_layout(cfg), lanes.reshape(-1, cfg.act_lanes))
    return [(Command(Opcode.LOAD_A, addr=0, count=count), words),
            (Command(Opcode.COMPUTE, act_addr=0, acc_addr=q * count, count=count,
                     accumulate=0), [])]


def _l_pass(lay: _Layout, q: int, count: int) -> list:
    """COMPUTE of second-factor pass ``q``: its part of the token's transposed entry."""
    entry, part = divmod(q, lay.ppe)
    return [(Command(Opcode.COMPUTE, act_addr=lay.l_base + entry * lay.chunk,
                     acc_addr=q * count, count=count, accumulate=0, part=part), [])]


def _middle_moves(cfg: MacroConfig, lay: _Layout, windows: list[_Window], count: int) -> list:
    """The transposing MOVEs of a chunk: per token, first-factor block and window, lanes
    ``col0 + j0 ..`` of block ``i``'s accumulator entry to row ``row0 + i`` of the window's
    chunks."""
    steps = []
    for t in range(count):
        for i, p in enumerate(lay.right.placements):
            for win in windows:
                steps.append((Command(Opcode.MOVE, bank=p.sub, acc_addr=p.pass_ * count + t,
                                      act_addr=lay.l_base + win.entry * lay.chunk + t,
                                      elem=win.row0 + i, count=1, transpose=1,
                                      lane=p.col0 + win.j0, dst=win.chunk0,
                                      lanes=0 if win.n == cfg.cols else win.n), []))
    return steps


def _reads(lay: _Layout, t0: int, count: int, beat: int, result_map: np.ndarray):
    """READs of a chunk's second-factor results, one per accumulator bank (sub-macro), and
    where each output lands in ``result_map``; returns ``(steps, next beat)``."""
    s = lay.left.matrix.block_out
    last_on_bank: dict[int, int] = {}
    for p in lay.left.placements:
        last_on_bank[p.sub] = max(last_on_bank.get(p.sub, 0), p.pass_)
    steps = []
    for sub in sorted(last_on_bank):
        n = (last_on_bank[sub] + 1) * count
        steps.append((Command(Opcode.READ, addr=0, count=n, bank=sub), []))
        for p in lay.left.placements:
            if p.sub == sub:
                at = beat + p.pass_ * count + np.arange(count)
                result_map[t0:t0 + count, p.block, :, 0] = at[:, None]
                result_map[t0:t0 + count, p.block, :, 1] = p.col0 + np.arange(s)
        beat += n
    return steps, beat


def _schedule_blocks(cfg, x, r_blocks, l_blocks, shift, mapping) -> MonarchSchedule:
    b, s, _ = r_blocks.shape
    tokens = x.shape[0]
    lay = _layout(cfg, b, s, tokens, mapping)
    windows = _windows(cfg, lay)
    images, occupied = _weight_images(cfg, lay, r_blocks, l_blocks)
    steps: list[tuple[Command, list[int]]] = []
    if _needs_zero(cfg, lay, occupied):
        steps += zero_entries(cfg, lay.l_base, lay.chunk * lay.l_entries)
    steps.append((Command(Opcode.CONFIG, mode=Mode.DENSE, n=1, m=1, split=cfg.max_split,
                          shift=shift), []))
    w_words = [pack_weight_rows(cfg, image, np.zeros_like(image) if cfg.meta_bits else None)
               for image in images]
    passes_of_load = _passes_of_load(lay)
    result_map = np.zeros((tokens, s, s, 2), dtype=np.int64)
    beat = moves = 0
    for t0 in range(0, tokens, lay.chunk):
        count = min(lay.chunk, tokens - t0)
        for load, passes in enumerate(passes_of_load):
            steps.append((Command(Opcode.LOAD_W, row=0, count=cfg.weight_rows), w_words[load]))
            for name, q in passes:
                if name == "l":
                    steps += _l_pass(lay, q, count)
                    continue
                steps += _r_pass(cfg, lay, x[t0:t0 + count], q)
                if q == lay.r_passes - 1:
                    middle = _middle_moves(cfg, lay, windows, count)
                    steps += middle
                    moves += len(middle)
        reads, beat = _reads(lay, t0, count, beat, result_map)
        steps += reads
    steps.append((Command(Opcode.END), []))
    trace = build_trace(cfg, steps, {"workload": "monarch", "mapping": mapping, "tokens": tokens,
                                     "b": b, "s": s, "shift": shift, "chunk": lay.chunk,
                                     "loads": lay.loads})
    return MonarchSchedule(trace=trace, tokens=tokens, b=b, s=s, mapping=mapping,
                           result_map=result_map, result_beats=beat, chunk=lay.chunk,
                           loads=lay.loads, passes=lay.r_passes + lay.l_passes,
                           moves=moves / tokens,
                           utilization=2 * b * s * s / (lay.loads * cfg.cells),
                           placements=(lay.right, lay.left))


# Linear: two densified GEMMs ----------------------------------------------------------------

def _schedule_linear(cfg, x, r_blocks, l_blocks, shift) -> MonarchSchedule:
    b, s, _ = r_blocks.shape
    tokens = x.shape[0]
    red, cols = cfg.reduction, cfg.cols
    k_dim = b * s
    w1 = np.zeros((k_dim, k_dim), dtype=np.int64)         # (in, out) = x index -> u index
    w2 = np.zeros((k_dim, s * s), dtype=np.int64)         # u index i·s + j -> z index j·s + c
    for i in range(b):
        w1[i * s:(i + 1) * s, i * s:(i + 1) * s] = r_blocks[i].T
        for j in range(s):
            w2[i * s + j, j * s:(j + 1) * s] = l_blocks[j, :, i]
    # The two layers are tiled and their LOAD_W beats packed by the GEMM tiler.
    map1, map2 = map_dense(cfg, k_dim, k_dim), map_dense(cfg, k_dim, s * s)
    k1, n1 = map1.k_tiles, map1.n_tiles
    k2, n2 = map2.k_tiles, map2.n_tiles
    if n1 > cfg.max_pass_inputs // cols:
        raise ValueError(f"u needs {n1} chunks of {cols}, more than an activation entry holds")
    chunk = min(tokens, cfg.acc_depth // n1, cfg.act_depth // (k1 + 1))
    if chunk < 1:
        raise ValueError("the buffers are too shallow for one token of this layer")

    raw1, raw2 = tile_weight_bytes(cfg, map1, w1), tile_weight_bytes(cfg, map2, w2)
    # Layer 1 tiles load only their rows (stale rows meet zero-padded activations); layer 2's
    # last K tile may meet u chunks no MOVE wrote, so its tiles load every row, zeros included.
    tiles1 = {(kt, nt): (tile.rows, BeatArray(raw1[nt, kt, :tile.rows]))
              for nt in range(n1) for kt, tile in enumerate(map1.tiles[nt * k1:(nt + 1) * k1])}
    tiles2 = {(kt, nt): (cfg.weight_rows, BeatArray(raw2[nt, kt]))
              for nt in range(n2) for kt in range(k2)}
    entry_lanes = cfg.act_beats() * cfg.act_lanes
    steps: list[tuple[Command, list[int]]] = [
        (Command(Opcode.CONFIG, mode=Mode.DENSE, n=1, m=1, shift=shift), [])]
    result_map = np.zeros((tokens, s, s, 2), dtype=np.int64)
    out = np.arange(s * s)
    beat = moves = 0
    for t0 in range(0, tokens, chunk):
        count = min(chunk, tokens - t0)
        u_addr = k1 * count
        lanes = np.zeros((k1, count, entry_lanes), dtype=np.int64)
        for kt in range(k1):
            part = x[t0:t0 + count, kt * red:(kt + 1) * red]
            lanes[kt, :, :part.shape[1]] = part
        steps.append((Command(Opcode.LOAD_A, addr=0, count=k1 * count),
                      pack_beats(act_beat_layout(cfg), lanes.reshape(-1, cfg.act_lanes))))
        for nt in range(n1):
            for kt in range(k1):
                used, words = tiles1[kt, nt]
                steps.append((Command(Opcode.LOAD_W, row=0, count=used), words))
                steps.append((Command(Opcode.COMPUTE, act_addr=kt * count, acc_addr=nt * count,
                                      count=count, accumulate=int(kt > 0)), []))
        for nt in range(n1):
            steps.append((Command(Opcode.MOVE, bank=0, acc_addr=nt * count, act_addr=u_addr,
                                  elem=nt, count=count, transpose=0), []))
            moves += 1
        for nt in range(n2):
            for kt in range(k2):
                used, words = tiles2[kt, nt]
                steps.append((Command(Opcode.LOAD_W, row=0, count=used), words))
                steps.append((Command(Opcode.COMPUTE, act_addr=u_addr, acc_addr=0, count=count,
                                      accumulate=int(kt > 0), part=kt), []))
            steps.append((Command(Opcode.READ, addr=0, count=count), []))
            here = out[nt * cols:(nt + 1) * cols]
            j, c = np.divmod(here, s)
            for t in range(count):
                result_map[t0 + t, j, c, 0] = beat + t
                result_map[t0 + t, j, c, 1] = here - nt * cols
            beat += count
    steps.append((Command(Opcode.END), []))
    loads = k1 * n1 + k2 * n2
    trace = build_trace(cfg, steps, {"workload": "monarch", "mapping": "linear", "tokens": tokens,
                                "b": b, "s": s, "shift": shift, "chunk": chunk,
                                "loads": loads})
    return MonarchSchedule(trace=trace, tokens=tokens, b=b, s=s, mapping="linear",
                           result_map=result_map, result_beats=beat, chunk=chunk, loads=loads,
                           passes=loads, moves=moves / tokens,
                           utilization=2 * b * s * s / (loads * cfg.cells))


# Cycles -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MonarchCost:
    """Cycle-model figures of one mapping of a Monarch layer on a macro.

    Attributes
    ----------
    mapping : str
    b, s, tokens : int
    counters : dict
        The cycle model's counters for the whole trace (``stall`` 0), as the golden model
        predicts them.
    cycles_per_token : float
        ``counters["total"] / tokens``.
    loads : int
        Weight images of the macro per chunk of tokens.
    passes : int
        Compute passes per token.
    moves : float
        MOVE commands per token.
    utilization : float
        The layer's ``2·b·s²`` weights over the cells of every load.
    chunk : int
        Tokens per chunk.
    """
    mapping: str
    b: int
    s: int
    tokens: int
    counters: dict
    cycles_per_token: float
    loads: int
    passes: int
    moves: float
    utilization: float
    chunk: int


def monarch_cost(cfg: MacroConfig, b: int, s: int, mapping: str, tokens: int = 1,
                 shift: int = 0) -> MonarchCost:
    """Schedule a ``b × s`` Monarch layer (``R``: b blocks of s × s, ``L``: s blocks of
    s × b) for ``tokens`` tokens in ``mapping`` and return its cycle-model figures.

    Cycles do not depend on the values, so the operands are zeros; the counters are the
    ISA's per-command costs summed over the trace
    (:func:`~sparsecim.sw.schedule.steps.trace_counters`), without a golden run.

    Raises
    ------
    ValueError
        As :func:`schedule_monarch`, and if ``tokens`` is not a positive integer.
    """
    if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 1:
        raise ValueError(f"tokens must be a positive integer, not {tokens!r}")
    x = np.zeros((tokens, b * s), dtype=np.int64)
    schedule = schedule_monarch(cfg, x, np.zeros((b, s, s), dtype=np.int64),
                                np.zeros((s, s, b), dtype=np.int64), shift, mapping)
    counters = trace_counters(schedule.trace)
    return MonarchCost(mapping, b, s, tokens, counters, counters["total"] / tokens,
                       schedule.loads, schedule.passes, schedule.moves,
                       schedule.utilization, schedule.chunk)
