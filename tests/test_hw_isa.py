from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Shape, signed
from sparsecim.hw.config import PRESETS, MacroConfig, preset
from sparsecim.hw.isa import (
    COMPUTE_DRAIN,
    Command,
    DecodeError,
    ErrorCode,
    Mode,
    Opcode,
    act_beat_layout,
    args_layout,
    check,
    command_layout,
    cycles,
    decode,
    encode,
    isa_markdown,
    move_window,
    pack_beats,
    pack_weight_rows,
    part_fits,
    pattern_of,
    requantize,
    result_layout,
    unpack_beats,
    unpack_weight_rows,
    weight_row_layout,
)

ROOT = Path(__file__).resolve().parent.parent


def _random_command(cfg, opcode, rng):
    fields = {}
    for name, field in args_layout(cfg, opcode):
        if field.shape is Mode:
            fields[name] = Mode.DENSE
        else:
            fields[name] = int(rng.integers(0, 2 ** Shape.cast(field.shape).width))
    return Command(opcode, **fields)


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("opcode", list(Opcode), ids=lambda op: op.name)
def test_every_opcode_round_trips(name, opcode):
    cfg = preset(name)
    rng = np.random.default_rng(opcode.value)
    for _ in range(50):
        cmd = _random_command(cfg, opcode, rng)
        word = encode(cfg, cmd)
        assert 0 <= word < 2 ** command_layout(cfg).size
        assert decode(cfg, word) == cmd


def test_fields_extremes_round_trip():
    cfg = preset("flexcim")
    cmd = Command(Opcode.COMPUTE, act_addr=63, acc_addr=63, count=64, accumulate=1)
    assert decode(cfg, encode(cfg, cmd)) == cmd


@pytest.mark.parametrize("raw", [6])
def test_decode_rejects_undefined_opcode(raw):
    cfg = preset("tiny")
    with pytest.raises(DecodeError) as exc:
        decode(cfg, raw)
    assert str(exc.value) == f"opcode {raw} is not defined"
    assert exc.value.code == ErrorCode.ILLEGAL_OPCODE


def test_decode_keeps_unknown_mode_for_check():
    cfg = preset("tiny")
    word = encode(cfg, Command(Opcode.CONFIG, mode=Mode.DENSE, n=1, m=1))
    offset = command_layout(cfg)["args"].offset + args_layout(cfg, Opcode.CONFIG)["mode"].offset
    cmd = decode(cfg, word | (2 << offset))
    assert cmd.mode == 2
    assert check(cfg, cmd) == ErrorCode.ILLEGAL_MODE


@pytest.mark.parametrize("mode, n, m, selected", [
    (Mode.DENSE, 1, 1, (1, 1)),
    (Mode.DENSE, 2, 4, None),       # dense takes no pattern
    (Mode.NM, 1, 1, None),          # 1:1 is dense, not listed
    (Mode.NM, 2, 4, (2, 4)),
    (Mode.NM, 1, 8, (1, 8)),
    (Mode.NM, 4, 8, (4, 8)),
    (Mode.NM, 3, 4, None),          # n does not divide P = 4
    (Mode.NM, 4, 4, None),
    (Mode.NM, 2, 15, None),         # m beyond the listed patterns
], ids=str)
def test_config_accepts_exactly_the_listed_patterns(mode, n, m, selected):
    cfg = preset("tiny")
    cmd = decode(cfg, encode(cfg, Command(Opcode.CONFIG, mode=mode, n=n, m=m)))
    assert pattern_of(cfg, cmd) == selected
    assert check(cfg, cmd) == (ErrorCode.NONE if selected else ErrorCode.ILLEGAL_MODE)


def test_every_listed_pattern_is_selectable_on_every_preset():
    for cfg in PRESETS.values():
        for n, m in cfg.patterns:
            cmd = Command(Opcode.CONFIG, mode=Mode.NM, n=n, m=m)
            assert pattern_of(cfg, decode(cfg, encode(cfg, cmd))) == (n, m)


def test_decode_rejects_words_wider_than_the_layout():
    cfg = preset("tiny")
    size = command_layout(cfg).size
    with pytest.raises(ValueError) as exc:
        decode(cfg, 2 ** size)
    assert str(exc.value) == (f"command word must be an integer of at most {size} bits, "
                              f"not {2 ** size}")


def test_encode_rejects_a_value_that_does_not_fit():
    cfg = preset("flexcim")
    with pytest.raises(ValueError) as exc:
        encode(cfg, Command(Opcode.LOAD_W, row=128, count=1))
    assert str(exc.value) == "LOAD_W row must be an integer from 0 to 127 (7 bits), not 128"


def test_encode_rejects_missing_and_unknown_fields():
    cfg = preset("flexcim")
    with pytest.raises(ValueError) as exc:
        encode(cfg, Command(Opcode.READ, addr=0, cnt=1))
    assert str(exc.value) == "READ has no field 'cnt'; it takes ['addr', 'count', 'bank']"


def test_encode_rejects_int_for_enum_field():
    cfg = preset("flexcim")
    with pytest.raises(ValueError) as exc:
        encode(cfg, Command(Opcode.CONFIG, mode=0, n=1, m=1))
    assert str(exc.value) == "CONFIG mode must be a Mode, not 0"


def test_config_command_needs_n_and_m():
    with pytest.raises(ValueError, match=r"CONFIG needs field 'n'; it takes \['mode', 'n', 'm', "
                       r"'split', 'shift'\]"):
        encode(preset("tiny"), Command(Opcode.CONFIG, mode=Mode.DENSE))


@pytest.mark.parametrize("cmd, code", [
    (Command(Opcode.LOAD_W, row=0, count=0), ErrorCode.ZERO_COUNT),
    (Command(Opcode.LOAD_W, row=15, count=1), ErrorCode.NONE),
    (Command(Opcode.LOAD_W, row=15, count=2), ErrorCode.ADDRESS_RANGE),
    (Command(Opcode.LOAD_A, addr=15, count=1), ErrorCode.NONE),
    (Command(Opcode.LOAD_A, addr=10, count=7), ErrorCode.ADDRESS_RANGE),
    (Command(Opcode.COMPUTE, act_addr=8, acc_addr=0, count=8, accumulate=0), ErrorCode.NONE),
    (Command(Opcode.COMPUTE, act_addr=9, acc_addr=0, count=8, accumulate=0),
     ErrorCode.ADDRESS_RANGE),
    (Command(Opcode.COMPUTE, act_addr=0, acc_addr=1, count=8, accumulate=1),
     ErrorCode.ADDRESS_RANGE),
    (Command(Opcode.READ, addr=7, count=1), ErrorCode.NONE),
    (Command(Opcode.READ, addr=7, count=2), ErrorCode.ADDRESS_RANGE),
    (Command(Opcode.READ, addr=0, count=0), ErrorCode.ZERO_COUNT),
    (Command(Opcode.END), ErrorCode.NONE),
], ids=str)
def test_check_on_tiny(cmd, code):
    # tiny: 16 weight rows, act_depth 16, acc_depth 8
    assert check(preset("tiny"), cmd) == code


def test_cycle_costs_follow_the_documented_formulas():
    cfg = preset("flexcim")
    # A data beat is 32 × (8 + 3) = 352 bits: 44 activations; a dense entry is 128 of them.
    assert (cfg.data_bits, cfg.act_lanes, cfg.act_beats()) == (352, 44, 3)
    assert cycles(cfg, Command(Opcode.CONFIG, mode=Mode.DENSE, n=1, m=1)).total == 1
    assert cycles(cfg, Command(Opcode.LOAD_W, row=0, count=128)).total == 1 + 128
    assert cycles(cfg, Command(Opcode.LOAD_A, addr=0, count=3)).total == 1 + 3 * 3
    # An N:M entry holds rows × (P/n) × m activations: 1:8 → 32 × 4 × 8 = 1024 = 23.3 beats.
    load_a = Command(Opcode.LOAD_A, addr=0, count=2)
    for (n, m), beats in {(2, 4): 6, (4, 8): 6, (1, 2): 6, (1, 4): 12, (2, 8): 12,
                          (1, 8): 24}.items():
        assert -(-32 * (4 // n) * m // 44) == beats
        assert cycles(cfg, load_a, (n, m)).load == 2 * beats
    cost = cycles(cfg, Command(Opcode.COMPUTE, act_addr=0, acc_addr=0, count=5, accumulate=1))
    assert (cost.total, cost.compute) == (1 + 5 + COMPUTE_DRAIN, 5 + COMPUTE_DRAIN)
    assert cycles(cfg, Command(Opcode.READ, addr=0, count=4)).read == 4
    assert cycles(cfg, Command(Opcode.END)).total == 1


def test_weight_row_packing_is_little_endian_lanes_then_metadata():
    cfg = preset("tiny")
    # Weight c sits in bits [8c, 8c+8): bytes 01 fe 03 fc from lane 0 up; then 3-bit
    # positions from bit 32: 5, 0, 7, 1 -> 0b001_111_000_101.
    word = 0xFC03FE01 | (0b001111000101 << 32)
    assert pack_weight_rows(cfg, [[1, -2, 3, -4]], [[5, 0, 7, 1]]) == [word]
    weights, meta = unpack_weight_rows(cfg, [word])
    assert (weights.tolist(), meta.tolist()) == ([[1, -2, 3, -4]], [[5, 0, 7, 1]])
    assert weight_row_layout(cfg).size == cfg.data_bits == 4 * (8 + 3)


def test_weight_rows_round_trip_and_reject_bad_metadata():
    cfg = preset("flexcim")
    rng = np.random.default_rng(3)
    weights = rng.integers(-128, 128, size=(40, 32))
    meta = rng.integers(0, 8, size=(40, 32))
    got = unpack_weight_rows(cfg, pack_weight_rows(cfg, weights, meta))
    assert np.array_equal(got[0], weights) and np.array_equal(got[1], meta)
    with pytest.raises(ValueError, match=r"lane value must be in 0..7 \(3-bit unsigned\), not 8"):
        pack_weight_rows(cfg, weights[:1], np.full((1, 32), 8))
    dense_only = MacroConfig(rows=4, cols=4, submacros=4, act_depth=4, acc_depth=4)
    assert dense_only.meta_bits == 0 and weight_row_layout(dense_only).size == 32
    with pytest.raises(ValueError, match="metadata must be 0 on a dense-only config"):
        pack_weight_rows(dense_only, [[1, 2, 3, 4]], [[0, 1, 0, 0]])


@pytest.mark.parametrize("layout_of", [lambda cfg: weight_row_layout(cfg)["weight"].shape,
                                       act_beat_layout, result_layout],
                         ids=["weight_row", "act_beat", "result"])
def test_pack_unpack_round_trip_with_extremes(layout_of):
    cfg = preset("flexcim")
    layout = layout_of(cfg)
    width = Shape.cast(layout.elem_shape).width
    rng = np.random.default_rng(1)
    lo, hi = -(2 ** (width - 1)), 2 ** (width - 1) - 1
    values = rng.integers(lo, hi + 1, size=(20, layout.length))
    values[0, :] = lo
    values[1, :] = hi
    assert np.array_equal(unpack_beats(layout, pack_beats(layout, values)), values)


def test_pack_rejects_out_of_range_lane():
    with pytest.raises(ValueError) as exc:
        pack_beats(weight_row_layout(preset("tiny"))["weight"].shape, [[0, 128, 0, 0]])
    assert str(exc.value) == "lane value must be in -128..127 (8-bit signed), not 128"


def test_isa_doc_is_in_sync():
    generated = isa_markdown(preset("flexcim"), "flexcim")
    assert (ROOT / "docs" / "isa.md").read_text() == generated, "run `make docs`"


@pytest.mark.parametrize("width, lanes", [(8, 32), (16, 5), (32, 4), (12, 3)],
                         ids=["8bit", "16bit", "32bit", "12bit-generic"])
def test_unpack_agrees_with_plain_python_decoding(width, lanes):
    from amaranth.hdl import signed
    from amaranth.lib import data

    layout = data.ArrayLayout(signed(width), lanes)
    rng = np.random.default_rng(width)
    words = [int.from_bytes(rng.bytes(-(-layout.size // 8)), "little") & (2 ** layout.size - 1)
             for _ in range(100)]

    def lane(word, i):
        raw = (word >> (i * width)) & (2 ** width - 1)
        return raw - 2 ** width if raw >> (width - 1) else raw

    expected = [[lane(word, i) for i in range(lanes)] for word in words]
    assert unpack_beats(layout, words).tolist() == expected


@pytest.mark.parametrize("fields, code", [
    ({"mode": Mode.DENSE, "n": 1, "m": 1, "split": 2}, ErrorCode.NONE),
    ({"mode": Mode.DENSE, "n": 1, "m": 1, "split": 3}, ErrorCode.ILLEGAL_MODE),  # > log2 P
    ({"mode": Mode.NM, "n": 2, "m": 4, "split": 1}, ErrorCode.ILLEGAL_MODE),     # N:M sums all
    ({"mode": Mode.DENSE, "n": 1, "m": 1, "shift": 31}, ErrorCode.NONE),
], ids=str)
def test_config_split_and_shift_limits(fields, code):
    cfg = preset("tiny")
    assert check(cfg, decode(cfg, encode(cfg, Command(Opcode.CONFIG, **fields)))) == code


def _move(**fields):
    return Command(Opcode.MOVE, **({"bank": 0, "acc_addr": 0, "act_addr": 0, "elem": 0,
                                    "count": 1, "transpose": 0} | fields))


@pytest.mark.parametrize("cmd, code", [
    (_move(), ErrorCode.NONE),
    (_move(count=0), ErrorCode.ZERO_COUNT),
    (_move(acc_addr=7, count=2), ErrorCode.ADDRESS_RANGE),        # acc_depth 8
    (_move(act_addr=15, count=2), ErrorCode.ADDRESS_RANGE),       # act_depth 16
    (_move(elem=31), ErrorCode.NONE),                             # 32 × 4 = 128 elements
    (_move(transpose=1, elem=3, count=1), ErrorCode.NONE),        # columns 0 .. cols-1
    (_move(transpose=1, elem=3, count=2), ErrorCode.ADDRESS_RANGE),
    (_move(transpose=1, act_addr=15, count=4), ErrorCode.NONE),   # one entry only
    (_move(lane=1, dst=3, lanes=1), ErrorCode.NONE),              # windows of cols = 4 lanes
    (_move(lane=3, dst=0, lanes=2), ErrorCode.ADDRESS_RANGE),
    (_move(lane=0, dst=2, lanes=3, transpose=1), ErrorCode.ADDRESS_RANGE),
    (_move(lane=1, lanes=0), ErrorCode.ADDRESS_RANGE),            # 0 means all 4 lanes
], ids=str)
def test_move_checks(cmd, code):
    cfg = preset("tiny")
    assert check(cfg, decode(cfg, encode(cfg, cmd))) == code
    if code == ErrorCode.NONE:
        assert cycles(cfg, cmd).as_dict() | {"total": 0} == \
            {"total": 0, "fetch": 1, "load": cmd.count, "compute": 0, "read": 0, "stall": 0}


def test_requantize_rounds_half_up_and_saturates():
    cfg = preset("tiny")
    values = [0, 7, 8, 9, -8, -9, -24, 1000, -1000, 2 ** 31 - 1, -(2 ** 31)]
    # shift 4: (v + 8) >> 4, floor division
    assert requantize(cfg, values, 4).tolist() == [0, 0, 1, 1, 0, -1, -1, 63, -62, 127, -128]
    assert requantize(cfg, [127, 128, -128, -129], 0).tolist() == [127, 127, -128, -128]


def test_parts_of_an_entry_depend_on_the_pattern():
    cfg = preset("flexcim")   # 1024-element entries
    assert cfg.max_parts == 8
    assert part_fits(cfg, 7, (1, 1)) and not part_fits(cfg, 8, (1, 1))
    assert part_fits(cfg, 3, (2, 4)) and not part_fits(cfg, 4, (2, 4))
    assert part_fits(cfg, 0, (1, 8)) and not part_fits(cfg, 1, (1, 8))


def test_optional_fields_default_to_zero():
    cmd = Command(Opcode.READ, addr=1, count=2)
    assert cmd.bank == 0 and cmd == Command(Opcode.READ, addr=1, count=2, bank=0)
    assert Command(Opcode.CONFIG, mode=Mode.DENSE, n=1, m=1).fields == {
        "mode": Mode.DENSE, "n": 1, "m": 1, "split": 0, "shift": 0}


def test_move_window_defaults_to_every_lane():
    cfg = preset("tiny")
    cmd = Command(Opcode.MOVE, bank=0, acc_addr=0, act_addr=0, elem=0, count=1, transpose=0)
    assert (cmd.lane, cmd.dst, cmd.lanes) == (0, 0, 0)
    assert move_window(cfg, cmd) == (0, 0, 4)
    assert move_window(cfg, _move(lane=2, dst=1, lanes=2)) == (2, 1, 2)
    assert decode(cfg, encode(cfg, _move(lane=3, dst=2, lanes=1))) == \
        _move(lane=3, dst=2, lanes=1)


def test_move_window_of_another_opcode_is_refused():
    with pytest.raises(ValueError) as exc:
        move_window(preset("tiny"), Command(Opcode.END))
    assert str(exc.value) == "only MOVE has a lane window, not END"


@pytest.mark.parametrize("width", [1, 2, 3, 4, 5, 6, 7, 8, 12, 13, 16, 24, 25, 26, 32, 40])
@pytest.mark.parametrize("is_signed", [True, False], ids=["signed", "unsigned"])
def test_byte_view_packing_gives_the_reference_words(width, is_signed):
    """The byte-view packers give the words of the bit-array packers they replaced, for every
    lane width (byte lanes, narrow lanes sharing bytes, lanes straddling bytes) and lane
    count, and unpack them back."""
    from amaranth.hdl import unsigned
    from amaranth.lib import data
    from sparsecim.hw.isa import pack_beat_bytes, unpack_beat_bytes
    from sparsecim.sw._reference import pack_beats_reference, unpack_beats_reference

    rng = np.random.default_rng(width)
    lo, hi = (-(2 ** (width - 1)), 2 ** (width - 1) - 1) if is_signed else (0, 2 ** width - 1)
    for lanes in (1, 3, 8, 33):
        layout = data.ArrayLayout(signed(width) if is_signed else unsigned(width), lanes)
        values = rng.integers(lo, hi, size=(40, lanes), endpoint=True)
        values[0], values[1] = lo, hi
        words = pack_beats_reference(layout, values)
        assert pack_beats(layout, values) == words
        assert pack_beats(layout, values[:, :1]) == pack_beats_reference(layout, values[:, :1])
        assert np.array_equal(unpack_beats(layout, words), values)
        assert np.array_equal(unpack_beats(layout, words), unpack_beats_reference(layout, words))
        small = unpack_beat_bytes(layout, pack_beat_bytes(layout, values), None)
        assert np.array_equal(small, values) and small.dtype.itemsize <= 8


@pytest.mark.parametrize("name", ["tiny", "flexcim", "fpga", "paper", "odd-widths"])
def test_byte_view_weight_rows_give_the_reference_words(name):
    from sparsecim.hw.isa import unpack_weight_row_bytes, words_to_bytes
    from sparsecim.sw._reference import (
        pack_weight_rows_reference,
        unpack_weight_rows_reference,
    )

    # 3 columns of 5-bit weights: the metadata starts at bit 15, inside a byte.
    cfg = preset(name) if name != "odd-widths" else MacroConfig(
        rows=4, cols=3, submacros=4, act_depth=4, acc_depth=4, weight_bits=5, act_bits=6,
        patterns=((2, 4),))
    rng = np.random.default_rng(4)
    top = 2 ** (cfg.weight_bits - 1)
    weights = rng.integers(-top, top, size=(50, cfg.cols))
    meta = rng.integers(0, 2 ** cfg.meta_bits, size=(50, cfg.cols))
    words = pack_weight_rows_reference(cfg, weights, meta)
    assert pack_weight_rows(cfg, weights, meta) == words
    assert pack_weight_rows(cfg, weights) == pack_weight_rows_reference(cfg, weights)
    for got, old in zip(unpack_weight_rows(cfg, words), unpack_weight_rows_reference(cfg, words),
                        strict=True):
        assert np.array_equal(got, old)
    raw = words_to_bytes(words, -(-cfg.data_bits // 8))
    got_w, got_m = unpack_weight_row_bytes(cfg, raw, None)
    assert np.array_equal(got_w, weights) and np.array_equal(got_m, meta)
