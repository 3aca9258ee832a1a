from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Shape
from sparsecim.hw.config import PRESETS, preset
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
    pack_beats,
    result_layout,
    unpack_beats,
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


@pytest.mark.parametrize("raw", [5, 6])
def test_decode_rejects_undefined_opcode(raw):
    cfg = preset("tiny")
    with pytest.raises(DecodeError) as exc:
        decode(cfg, raw)
    assert str(exc.value) == f"opcode {raw} is not defined"
    assert exc.value.code == ErrorCode.ILLEGAL_OPCODE


def test_decode_keeps_unknown_mode_for_check():
    cfg = preset("tiny")
    word = command_layout(cfg).const({"opcode": Opcode.CONFIG, "args": {"config": {}}}).as_bits()
    offset = command_layout(cfg)["args"].offset + args_layout(cfg, Opcode.CONFIG)["mode"].offset
    cmd = decode(cfg, word | (1 << offset))
    assert cmd.mode == 1
    assert check(cfg, cmd) == ErrorCode.ILLEGAL_MODE


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
    assert str(exc.value) == "READ takes fields ['addr', 'count'], not ['addr', 'cnt']"


def test_encode_rejects_int_for_enum_field():
    cfg = preset("flexcim")
    with pytest.raises(ValueError) as exc:
        encode(cfg, Command(Opcode.CONFIG, mode=0))
    assert str(exc.value) == "CONFIG mode must be a Mode, not 0"


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
    assert cfg.act_beats == 4
    assert cycles(cfg, Command(Opcode.CONFIG, mode=Mode.DENSE)).total == 1
    assert cycles(cfg, Command(Opcode.LOAD_W, row=0, count=128)).total == 1 + 128
    assert cycles(cfg, Command(Opcode.LOAD_A, addr=0, count=3)).total == 1 + 3 * 4
    cost = cycles(cfg, Command(Opcode.COMPUTE, act_addr=0, acc_addr=0, count=5, accumulate=1))
    assert (cost.total, cost.compute) == (1 + 5 + COMPUTE_DRAIN, 5 + COMPUTE_DRAIN)
    assert cycles(cfg, Command(Opcode.READ, addr=0, count=4)).read == 4
    assert cycles(cfg, Command(Opcode.END)).total == 1


def test_weight_row_packing_is_little_endian_lanes():
    cfg = preset("tiny")
    # Lane c sits in bits [8c, 8c+8): bytes 01 fe 03 fc from lane 0 up.
    assert pack_beats(weight_row_layout(cfg), [[1, -2, 3, -4]]) == [0xFC03FE01]
    assert unpack_beats(weight_row_layout(cfg), [0x80FF7F00]).tolist() == [[0, 127, -1, -128]]


@pytest.mark.parametrize("layout_of", [weight_row_layout, act_beat_layout, result_layout],
                         ids=lambda f: f.__name__)
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
        pack_beats(weight_row_layout(preset("tiny")), [[0, 128, 0, 0]])
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
