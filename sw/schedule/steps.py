"""The one trace builder of the schedulers, and the one cycle prediction from commands.

A scheduler lists its steps as ``(command, beats)`` pairs; :func:`build_trace` encodes each
distinct command once and makes the :class:`~sparsecim.hw.trace.Trace`. :func:`zero_entries`
is the step that zeroes activation entries whole. The cycle model's counters of a schedule
are :func:`sparsecim.hw.isa.cycles` summed over its commands (:func:`counters_of`), the
pattern followed through its CONFIGs (:func:`trace_counters`): no golden run on zero operands
is needed for a figure (the golden model's counters are the same sum; the tests check it).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from ...hw.config import MacroConfig
from ...hw.isa import (
    COUNTERS,
    Command,
    Opcode,
    config_command,
    cycles,
    decode,
    encode,
    pattern_of,
)
from ...hw.trace import Step, Trace

__all__ = ["build_trace", "zero_entries", "counters_of", "trace_counters", "pack_rows",
           "CommandCache"]

#: Rows packed per call of a packer: bounds the temporaries of a large layer.
PACK_BLOCK = 1 << 16


@functools.lru_cache(maxsize=4096)
def encode_cached(cfg: MacroConfig, cmd: Command) -> int:
    """:func:`~sparsecim.hw.isa.encode`, remembered: building an Amaranth constant costs
    milliseconds, and the layers of a model repeat the same few dozen commands."""
    return encode(cfg, cmd)


def build_trace(cfg: MacroConfig, steps: Sequence[tuple[Command, object]],
                meta: dict) -> Trace:
    """The trace of ``steps`` (``(command, beats)`` pairs, in order), each distinct command
    encoded once (looked up by object first: a plan repeats the same few objects)."""
    trace = Trace(cfg, meta=meta)
    by_object: dict[int, tuple[Command, int]] = {}   # the command kept, so its id stays its
    for cmd, beats in steps:
        known = by_object.get(id(cmd))
        if known is None:
            known = by_object[id(cmd)] = (cmd, encode_cached(cfg, cmd))
        trace.steps.append(Step(known[1], beats))
    return trace


def zero_entries(cfg: MacroConfig, addr: int, count: int) -> list:
    """Steps that zero activation entries ``addr .. addr+count-1`` whole: LOAD_A of zeros in
    the pattern with the widest entry (the next CONFIG selects the layer's)."""
    widest = max(cfg.modes, key=lambda p: cfg.act_beats(*p))
    zeros = [0] * (count * cfg.act_beats(*widest))
    return [(config_command(widest), []),
            (Command(Opcode.LOAD_A, addr=addr, count=count), zeros)]


def counters_of(cfg: MacroConfig, times: Iterable[tuple[tuple[Command, tuple], int]]
                ) -> dict[str, int]:
    """Counters of commands each run ``times`` times in a pattern, from the ISA's
    per-command costs: ``times`` yields ``((command, pattern), times)``."""
    total = dict.fromkeys(COUNTERS, 0)
    for (cmd, pattern), count in times:
        for name, value in cycles(cfg, cmd, pattern).as_dict().items():
            total[name] += count * value
    return total


def trace_counters(trace: Trace) -> dict[str, int]:
    """The cycle model's counters of a legal trace (CONFIG first, END last): every distinct
    word decoded once, priced in the pattern the CONFIGs before it selected."""
    cfg = trace.config
    pattern = (1, 1)
    times: Counter = Counter()
    decoded: dict[int, Command] = {}
    for word in trace.commands:
        cmd = decoded.get(word)
        if cmd is None:
            cmd = decoded[word] = decode(cfg, word)
        times[cmd, pattern] += 1
        if cmd.opcode == Opcode.CONFIG:
            pattern = pattern_of(cfg, cmd)
    return counters_of(cfg, times.items())


def pack_rows(pack, values: np.ndarray, nbytes: int, *more) -> np.ndarray:
    """``pack(values[block], *more[block])`` in blocks of :data:`PACK_BLOCK` rows, into one
    ``uint8`` array of ``nbytes`` per row (narrower beats are zero above their layout)."""
    out = np.zeros((values.shape[0], nbytes), dtype=np.uint8)
    for start in range(0, values.shape[0], PACK_BLOCK):
        end = start + PACK_BLOCK
        raw = pack(values[start:end], *(array[start:end] for array in more))
        out[start:end, :raw.shape[1]] = raw
    return out


class CommandCache:
    """Command objects by their fields, built once each (a plan repeats few commands)."""

    def __init__(self):
        self._known: dict[tuple, Command] = {}

    def __call__(self, opcode: Opcode, **fields) -> Command:
        key = (opcode, *fields.items())
        cmd = self._known.get(key)
        if cmd is None:
            cmd = self._known[key] = Command(opcode, **fields)
        return cmd
