"""Scheduling a two-factor block-diagonal (Monarch) layer as one trace, on the macro.

The layer, for one token ``x`` of ``b·s`` inputs::

    u_i = R_i · x_i                          i = 0 .. b-1   (first factor, blocks s × s)
    v   = requantize(u), then transposed:    v_j[i] = u_i[j]  (Monarch's middle permutation)
    z_j = L_j · v_j                          j = 0 .. s-1   (second factor, blocks s × b)

so ``R`` has ``b`` blocks of ``s × s`` and ``L`` has ``s`` blocks of ``s × b``; the square
Monarch case is ``s = b``. ``R_i`` and ``L_j`` are given as ``(out, in)`` matrices like a
PyTorch Linear. The result is ``z`` as ``(tokens, s, s)`` int64 (block ``j``, output ``c``); a
caller's output permutation is an index map over it (:meth:`MonarchSchedule.assemble` leaves it
to the caller, it moves no data).

Placement (latency-optimized on the macro): block ``i`` of a factor sits on sub-macro
``i % P`` in pass ``i // P``, weights ``W[r, c] = B_i[c, r]`` on its first rows and columns, the
rest zero; CONFIG ``split = log2(P)`` keeps the P sub-macros apart, so one pass computes P
blocks and block ``i``'s outputs land in accumulator bank ``i % P``. Requirements: ``rows ==
cols`` (a block's outputs, one accumulator entry, are the next factor's inputs of a whole
block), ``s <= rows``, ``b <= cols`` and ``cols² <= max_pass_inputs``.

Address generation instead of data shuffles:

- the first factor's input blocks are loaded pass by pass, P blocks to an entry;
- the middle transpose is MOVE with ``transpose``: lane ``c`` of block ``i``'s accumulator
  entry goes to element ``c·cols + i`` of the token's second activation entry, i.e. input
  ``i`` of second-factor block ``c``, requantized with the CONFIG ``shift``;
- the second factor's pass ``q`` reads part ``q`` of that entry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..hw.config import MacroConfig
from ..hw.isa import (
    Command,
    Mode,
    Opcode,
    act_beat_layout,
    encode,
    pack_beats,
    pack_weight_rows,
)
from ..hw.trace import Step, Trace
from .reference import check_int_matrix

__all__ = ["MonarchSchedule", "schedule_monarch", "monarch_reference"]


@dataclass
class MonarchSchedule:
    """The trace of one Monarch layer and how to read its result beats.

    Attributes
    ----------
    trace : Trace
    tokens, b, s : int
        Tokens, first-factor blocks, block size.
    reads : list of (token0, count, block)
        READ commands in trace order: ``count`` beats of second-factor block ``block`` for
        tokens ``token0 ..``.
    """
    trace: Trace
    tokens: int
    b: int
    s: int
    reads: list

    @property
    def result_beats(self) -> int:
        return sum(count for _, count, _ in self.reads)

    def assemble(self, results: np.ndarray) -> np.ndarray:
        """Result beats to ``z`` shaped ``(tokens, s, s)``: block ``j``, output ``c``."""
        cfg = self.trace.config
        results = np.asarray(results)
        if results.shape != (self.result_beats, cfg.cols):
            raise ValueError(f"results must have shape {(self.result_beats, cfg.cols)}, "
                             f"not {results.shape}")
        out = np.zeros((self.tokens, self.s, self.s), dtype=np.int64)
        beat = 0
        for t0, count, block in self.reads:
            out[t0:t0 + count, block] = results[beat:beat + count, :self.s]
            beat += count
        return out


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


def _check(cfg: MacroConfig, x, r_blocks, l_blocks, shift):
    if cfg.rows != cfg.cols:
        raise ValueError(f"a Monarch layer needs rows == cols, not {cfg.rows} and {cfg.cols}")
    r_blocks = np.asarray(r_blocks)
    l_blocks = np.asarray(l_blocks)
    if r_blocks.ndim != 3 or r_blocks.shape[1] != r_blocks.shape[2]:
        raise ValueError(f"r_blocks must have shape (b, s, s), not {r_blocks.shape}")
    b, s, _ = r_blocks.shape
    if l_blocks.shape != (s, s, b):
        raise ValueError(f"l_blocks must have shape (s, s, b) = {(s, s, b)}, "
                         f"not {l_blocks.shape}")
    if not 1 <= s <= cfg.rows or not 1 <= b <= cfg.cols:
        raise ValueError(f"blocks must satisfy 1 <= s <= {cfg.rows} and 1 <= b <= "
                         f"{cfg.cols}, not s={s}, b={b}")
    if cfg.cols * cfg.cols > cfg.max_pass_inputs:
        raise ValueError(f"the transposing MOVE needs cols² <= max_pass_inputs, not "
                         f"{cfg.cols}² > {cfg.max_pass_inputs}")
    if not 0 <= shift < cfg.acc_bits:
        raise ValueError(f"shift must be in 0..{cfg.acc_bits - 1}, not {shift}")
    x = check_int_matrix("x", x, cfg.act_bits)
    if x.shape[1] != b * s:
        raise ValueError(f"x must have b·s = {b * s} columns, not {x.shape[1]}")
    for name, blocks in (("r_blocks", r_blocks), ("l_blocks", l_blocks)):
        check_int_matrix(name, blocks.reshape(-1, blocks.shape[-1]), cfg.weight_bits)
    return x, r_blocks.astype(np.int64), l_blocks.astype(np.int64)


def schedule_monarch(cfg: MacroConfig, x, r_blocks, l_blocks, shift: int) -> MonarchSchedule:
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

    Raises
    ------
    ValueError
        For shapes the placement cannot hold (named), values out of range, a bad shift.
    """
    x, r_blocks, l_blocks = _check(cfg, x, r_blocks, l_blocks, shift)
    b, s, _ = r_blocks.shape
    tokens = x.shape[0]
    P, rows = cfg.submacros, cfg.rows
    chunk = min(tokens, cfg.act_depth // 2, cfg.acc_depth // -(-b // P))
    if chunk < 1:
        raise ValueError("the buffers are too shallow for one token of this layer")
    steps: list[tuple[Command, list[int]]] = []
    steps.append((Command(Opcode.CONFIG, mode=Mode.DENSE, n=1, m=1, split=cfg.max_split,
                          shift=shift), []))
    entry = cfg.act_beats() * cfg.act_lanes   # a dense LOAD_A fills the first part only
    reads = []

    def weight_rows(blocks, q):
        """Rows of pass q: block q·P + p on sub-macro p, W[r, c] = B[c, r]."""
        w = np.zeros((cfg.weight_rows, cfg.cols), dtype=np.int64)
        for p in range(P):
            i = q * P + p
            if i < len(blocks):
                out_f, in_f = blocks[i].shape
                w[p * rows:p * rows + in_f, :out_f] = blocks[i].T
        return pack_weight_rows(cfg, w, np.zeros_like(w) if cfg.meta_bits else None)

    r_passes, l_passes = -(-b // P), -(-s // P)
    r_words = [weight_rows(r_blocks, q) for q in range(r_passes)]
    l_words = [weight_rows(l_blocks, q) for q in range(l_passes)]
    for t0 in range(0, tokens, chunk):
        count = min(chunk, tokens - t0)
        # First factor, pass q: blocks q·P .. of every token of the chunk, loaded into entries
        # 0 .. count-1 (block q·P + p at elements p·rows ..), results in accumulator entries
        # q·count + t, bank p.
        for q in range(r_passes):
            lanes = np.zeros((count, entry), dtype=np.int64)
            for p in range(P):
                i = q * P + p
                if i < b:
                    lanes[:, p * rows:p * rows + s] = x[t0:t0 + count, i * s:(i + 1) * s]
            words = pack_beats(act_beat_layout(cfg), lanes.reshape(-1, cfg.act_lanes))
            steps.append((Command(Opcode.LOAD_A, addr=0, count=count), words))
            steps.append((Command(Opcode.LOAD_W, row=0, count=cfg.weight_rows), r_words[q]))
            steps.append((Command(Opcode.COMPUTE, act_addr=0, acc_addr=q * count, count=count,
                                  accumulate=0), []))
        # Middle transpose: lane c of block i's entry -> element c·cols + i of entry chunk+t.
        for t in range(count):
            for i in range(b):
                steps.append((Command(Opcode.MOVE, bank=i % P, acc_addr=(i // P) * count + t,
                                      act_addr=chunk + t, elem=i, count=1, transpose=1), []))
        # Second factor: pass q reads part q of the transposed entries.
        for q in range(l_passes):
            steps.append((Command(Opcode.LOAD_W, row=0, count=cfg.weight_rows), l_words[q]))
            steps.append((Command(Opcode.COMPUTE, act_addr=chunk, acc_addr=0, count=count,
                                  accumulate=0, part=q), []))
            for p in range(P):
                j = q * P + p
                if j < s:
                    steps.append((Command(Opcode.READ, addr=0, count=count, bank=p), []))
                    reads.append((t0, count, j))
    steps.append((Command(Opcode.END), []))
    trace = Trace(cfg, meta={"workload": "monarch", "mapping": "latency", "tokens": tokens,
                             "b": b, "s": s, "shift": shift, "chunk": chunk})
    for cmd, words in steps:
        trace.steps.append(Step(encode(cfg, cmd), words))
    return MonarchSchedule(trace, tokens, b, s, reads)
