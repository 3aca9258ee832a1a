import numpy as np
import pytest
from sparsecim.hw.chip_trace import ChipTrace, plan_chip
from sparsecim.hw.config import ChipConfig, chip_preset, preset
from sparsecim.hw.isa import (
    ISA_VERSION,
    Command,
    ErrorCode,
    Mode,
    Opcode,
    act_beat_layout,
    bytes_to_words,
    encode_chip,
    pack_beats,
    pack_weight_rows,
)
from sparsecim.hw.trace import BeatArray, TraceFormatError
from sparsecim.tb.randchip import CHIP_ILLEGAL_KINDS, random_chip_program

TINY4 = chip_preset("tiny4")
CFG = TINY4.macro


def _acts(count_beats, value=1):
    return pack_beats(act_beat_layout(CFG), [[value] * CFG.act_lanes] * count_beats)


def _small():
    trace = ChipTrace(TINY4, meta={"workload": "unit"})
    trace.append(Command(Opcode.LOAD_W, row=0, count=2),
                 pack_weight_rows(CFG, [[1, -2, 3, -4], [5, 6, 7, -128]]), target=1, span=2)
    trace.append(Command(Opcode.CONFIG, mode=Mode.NM, n=1, m=8), target=3, span=1)
    # Macros 0..2 are dense (16 activations an entry on tiny: 4 beats of 5 lanes), macro 3
    # is 1:8 (rows × P/n × m = 128 activations: 26 beats).
    trace.append(Command(Opcode.LOAD_A, addr=0, count=1), _acts(4), target=0, span=3)
    trace.append(Command(Opcode.LOAD_A, addr=0, count=1), _acts(26, -1), target=3, span=1)
    trace.append(Command(Opcode.END))
    return trace


def test_round_trip_and_streams(tmp_path):
    trace = _small()
    path = tmp_path / "t.chiptrace"
    trace.save(path)
    loaded = ChipTrace.load(path)
    assert loaded == trace
    assert loaded.commands == trace.commands
    assert loaded.weights == [0xFC03FE01, 0x80070605]
    assert len(loaded.acts) == 4 + 26
    # A BeatArray step writes the same text as a list of words.
    raw = BeatArray(np.array([[1, 0xFE, 0x03, 0xFC, 0, 0], [5, 6, 7, 0x80, 0, 0]],
                             dtype=np.uint8))
    copy = ChipTrace(TINY4, meta=trace.meta)
    copy.steps = [type(s)(s.command, raw if i == 0 else s.data)
                  for i, s in enumerate(trace.steps)]
    assert copy.to_text() == trace.to_text()
    assert bytes_to_words(copy.stream_array(Opcode.LOAD_W)) == trace.weights
    assert bytes_to_words(trace.stream_array(Opcode.LOAD_A)) == trace.acts


def test_file_lines_are_fixed_width_hex():
    lines = _small().to_text().splitlines()
    assert lines[0] == "sparsecim-chip-trace 1"
    assert lines[1] == f"isa {ISA_VERSION}"
    assert lines[2].startswith("chip {") and '"macros": 4' in lines[2]
    # Chip word: the 28-bit tiny command word, target (2 bits) at 28, span (3 bits) at 30:
    # 33 bits, 9 digits. LOAD_W row=0 count=2 is 0x101; target 1, span 2.
    word = 0x101 | 1 << 28 | 2 << 30
    assert lines[4] == f"c {word:09x}"
    assert lines[5] == "d 000fc03fe01"        # a weight row: 44 bits, 11 digits
    assert lines[9] == "d 0101010101"         # an activation beat: 5 × 8 bits, 10 digits


def test_dump_shows_range_and_lanes():
    text = _small().dump()
    assert "[1+2] LOAD_W row=0 count=2" in text
    assert "d w [1, -2, 3, -4] pos [0, 0, 0, 0]" in text
    assert "[3+1] CONFIG mode=NM n=1 m=8" in text
    assert "d [-1, -1, -1, -1, -1]" in text
    assert "[all] END" in text


def _text_with(lines_after_header):
    head = _small().to_text().splitlines()[:4]
    return "\n".join(head + lines_after_header) + "\n"


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("sparsecim-chip-trace 1", "sparsecim-chip-trace 2"),
     ":1: trace format version must be 1, not '2'"),
    (lambda t: t.replace("isa 6", "isa 5"), ":2: ISA version must be 6, not '5'"),
    (lambda t: t.replace('"macros": 4', '"macros": 0'), ":3: bad chip: macros must be"),
    (lambda t: t.replace("chip {", "chop {"), ":1: missing header line 'chip'"),
    (lambda t: t.replace("d 000fc03fe01", "d 0x0fc03fe01"), ":6: '0x0fc03fe01' is not a hex"),
    (lambda t: t.replace("d 000fc03fe01", "d 1" + "0" * 11),
     ":6: word 0x100000000000 is wider than 44 bits"),
    (lambda t: t.replace("d 000fc03fe01", "x 000fc03fe01"),
     ":6: line must start with 'c' or 'd', not 'x'"),
    # A beat of 41 bits on the 40-bit activation port (it fits the 44-bit parse limit).
    (lambda t: t.replace("d 0101010101", "d 10101010101", 1),
     ":10: beat must be an integer of at most 40 bits (its port's layout), not 0x10101010101"),
])
def test_malformed_files_give_one_line_naming_line_and_value(edit, message):
    text = edit(_small().to_text())
    with pytest.raises(TraceFormatError) as info:
        ChipTrace.from_text(text, source="t")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_beat_counts_follow_each_macros_pattern():
    text = _small().to_text()
    lines = text.splitlines()
    # Drop one beat of the dense LOAD_A (file lines 10..13): 4 needed.
    cut = "\n".join(lines[:12] + lines[13:]) + "\n"
    with pytest.raises(TraceFormatError, match=r"t:9: LOAD_A addr=0 count=1 takes 4 beats, "
                                               r"the step carries 3"):
        ChipTrace.from_text(cut, source="t")
    # A beat after CONFIG: only loads carry beats.
    bad = "\n".join(lines[:8] + ["d 0000000001"] + lines[8:]) + "\n"
    with pytest.raises(TraceFormatError, match=r"t:8: only LOAD_W and LOAD_A carry beats, "
                                               r"not CONFIG"):
        ChipTrace.from_text(bad, source="t")
    with pytest.raises(TraceFormatError, match=r"t:5: data beat before the first command"):
        ChipTrace.from_text(_text_with(["d 01"]), source="t")


def test_out_of_step_load_carries_the_shortest_macros_beats():
    trace = ChipTrace(TINY4)
    # 1:2 entries hold 4 × 4 × 2 = 32 activations: 7 beats of 5 lanes.
    trace.append(Command(Opcode.CONFIG, mode=Mode.NM, n=1, m=2), target=2, span=1)
    trace.append(Command(Opcode.LOAD_A, addr=0, count=2), _acts(8), target=1, span=2)
    trace.validate()       # dense macro 1 takes 2 × 4, macro 2 would take 2 × 7
    plan = trace.plan()
    assert plan.beats == [0, 8]
    assert plan.steps[1][2] == "mixed"
    trace.steps[1].data = _acts(16)
    with pytest.raises(TraceFormatError, match="takes 8 beats, the step carries 16"):
        trace.validate()


def test_plan_stops_at_end_and_at_a_refused_command():
    words = [encode_chip(TINY4, Command(Opcode.CONFIG, mode=Mode.DENSE, n=1, m=1),
                         target=3, span=2),
             encode_chip(TINY4, Command(Opcode.END))]
    plan = plan_chip(TINY4, words)
    assert plan.ended and [s[2] for s in plan.steps] == ["refused"]
    assert plan.steps[0][3] == ErrorCode.ADDRESS_RANGE
    plan = plan_chip(TINY4, words[1:] + words[:1])
    assert plan.ended and [s[2] for s in plan.steps] == ["end"]


@pytest.mark.parametrize("illegal", [None, *CHIP_ILLEGAL_KINDS])
def test_random_programs_are_well_formed_and_round_trip(illegal):
    chip = ChipConfig(macro=preset("tiny"), macros=3, clock_mhz=100.0, weight_bw=2,
                      offchip_bytes=1 << 20, buffer_bytes=4096, queue=2)
    rng = np.random.default_rng(7)
    for _ in range(5):
        trace = random_chip_program(chip, rng, illegal=illegal, tail=6)
        trace.validate()
        assert ChipTrace.from_text(trace.to_text()) == trace
        assert trace.meta["expect"] == (CHIP_ILLEGAL_KINDS[illegal].name if illegal
                                        else "NONE")
