import pytest
from sparsecim.hw.config import preset
from sparsecim.hw.isa import ISA_VERSION, Command, Mode, Opcode, pack_weight_rows
from sparsecim.hw.trace import Trace, TraceFormatError


def _small_trace():
    cfg = preset("tiny")
    trace = Trace(cfg, meta={"workload": "unit"})
    trace.append(Command(Opcode.CONFIG, mode=Mode.DENSE, n=1, m=1))
    trace.append(Command(Opcode.LOAD_W, row=0, count=2),
                 pack_weight_rows(cfg, [[1, -2, 3, -4], [5, 6, 7, -128]]))
    trace.append(Command(Opcode.END))
    return trace


def test_save_load_round_trip(tmp_path):
    trace = _small_trace()
    path = tmp_path / "t.trace"
    trace.save(path)
    loaded = Trace.load(path)
    assert loaded == trace
    assert loaded.commands == trace.commands
    assert loaded.data == [0xFC03FE01, 0x80070605]


def test_file_words_are_fixed_width_hex():
    lines = _small_trace().to_text().splitlines()
    assert lines[0] == "sparsecim-trace 1"
    assert lines[1] == f"isa {ISA_VERSION}"
    # CONFIG DENSE n=1 m=1: n at bit 5, m at bit 8. A 44-bit beat: 4 weights, then 4 3-bit
    # positions (zero), so 11 hex digits.
    assert lines[4:8] == ["c 0000120", "c 0000101", "d 000fc03fe01", "d 00080070605"]


def test_dump_shows_decoded_commands_and_lanes():
    text = _small_trace().dump()
    assert "LOAD_W row=0 count=2" in text
    assert "d w [1, -2, 3, -4] pos [0, 0, 0, 0]" in text
    assert "CONFIG mode=DENSE" in text


def test_dump_marks_illegal_words():
    trace = _small_trace()
    trace.steps[2].command = 6
    assert "<illegal: opcode 6 is not defined>" in trace.dump()


def _text_with(line_no, replacement):
    lines = _small_trace().to_text().splitlines()
    lines[line_no] = replacement
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("line_no, replacement, message", [
    (0, "sparsecim-trace 9", "t:1: trace format version must be 1, not '9'"),
    (1, "isa 1", f"t:2: ISA version must be {ISA_VERSION}, not '1'"),
    (5, "c 0xZZ", "t:6: '0xZZ' is not a hex word"),
    (5, "x 0101", "t:6: line must start with 'c' or 'd', not 'x'"),
    (6, "d 100000000000", "t:7: word 0x100000000000 is wider than 44 bits"),
    (5, "c 10000000", "t:6: word 0x10000000 is wider than 28 bits"),
], ids=["format", "isa", "hex", "kind", "wide-data", "wide-command"])
def test_malformed_lines_are_named(line_no, replacement, message):
    with pytest.raises(TraceFormatError) as exc:
        Trace.from_text(_text_with(line_no, replacement), source="t")
    assert str(exc.value) == message


def test_data_before_any_command_is_rejected():
    text = _small_trace().to_text().replace("c 0000\n", "")
    lines = text.splitlines()
    lines.insert(4, "d 00000000")
    with pytest.raises(TraceFormatError) as exc:
        Trace.from_text("\n".join(lines), source="t")
    assert str(exc.value) == "t:5: data beat before the first command"


def test_bad_config_is_reported():
    text = _small_trace().to_text().replace('"rows": 4', '"rows": 0')
    with pytest.raises(TraceFormatError) as exc:
        Trace.from_text(text, source="t")
    assert str(exc.value) == "t:3: bad config: rows must be a positive integer, not 0"


@pytest.mark.parametrize("line_no, replacement, message", [
    (6, "d -5", "t:7: '-5' is not a hex word"),
    (5, "c -1", "t:6: '-1' is not a hex word"),
    (6, "d 0x5", "t:7: '0x5' is not a hex word"),
    (6, "d 1_0", "t:7: '1_0' is not a hex word"),
], ids=["negative-data", "negative-command", "prefix", "underscore"])
def test_words_are_unsigned_hex_digits_only(line_no, replacement, message):
    with pytest.raises(TraceFormatError) as exc:
        Trace.from_text(_text_with(line_no, replacement), source="t")
    assert str(exc.value) == message


def test_a_trace_cut_off_in_its_data_is_rejected():
    # LOAD_W count=2 (line 6) with only its first beat: the file ends after line 7.
    text = "\n".join(_small_trace().to_text().splitlines()[:7]) + "\n"
    with pytest.raises(TraceFormatError) as exc:
        Trace.from_text(text, source="t")
    assert str(exc.value) == ("t:6: LOAD_W row=0 count=2 needs 2 data beats, the trace has 1 "
                              "left (cut off?)")


def _load_a_trace(beat):
    cfg = preset("tiny")
    trace = Trace(cfg)
    trace.append(Command(Opcode.LOAD_A, addr=0, count=1), [0] * (cfg.act_beats(1, 1) - 1)
                 + [beat])
    trace.append(Command(Opcode.END))
    return trace


def test_load_a_beat_with_unused_top_bits_set_is_rejected():
    cfg = preset("tiny")
    # tiny: 5 lanes of 8 bits in a 44-bit data beat; bits 40..43 belong to no lane (the RTL
    # ignores them, the golden model cannot unpack them): the format refuses them.
    assert cfg.act_lanes * cfg.act_bits == 40 and cfg.data_bits == 44
    beats = cfg.act_beats(1, 1)
    trace = _load_a_trace(1 << 40)
    with pytest.raises(TraceFormatError) as exc:
        Trace.from_text(trace.to_text(), source="t")
    assert str(exc.value) == (f"t:{5 + beats}: LOAD_A beat must fit its 40-bit layout (bits 40 "
                              f"and up unused, must be 0), not 0x10000000000")
    with pytest.raises(TraceFormatError) as exc:
        trace.validate()
    assert str(exc.value).startswith(f"data beat {beats - 1}: LOAD_A beat must fit")
    _load_a_trace((1 << 40) - 1).validate()  # every lane bit set is fine


def test_beats_after_an_illegal_command_are_not_checked():
    """An illegal command halts the sequencer before it takes data: whatever follows it is
    never read, by the RTL or the golden model, so it cannot make the trace malformed."""
    cfg = preset("tiny")
    trace = Trace(cfg)
    trace.append(Command(Opcode.LOAD_A, addr=cfg.act_depth - 1, count=2), [1 << 43])
    trace.validate()
def test_beat_array_reads_as_the_list_of_its_words():
    import numpy as np
    from sparsecim.hw.isa import beat_bytes, pack_weight_row_bytes
    from sparsecim.hw.trace import BeatArray

    cfg = preset("flexcim")
    rng = np.random.default_rng(0)
    weights = rng.integers(-128, 128, size=(5, 32))
    meta = rng.integers(0, 8, size=(5, 32))
    beats = BeatArray(pack_weight_row_bytes(cfg, weights, meta))
    words = pack_weight_rows(cfg, weights, meta)
    assert len(beats) == 5 and list(beats) == words and beats == words
    assert beats[3] == words[3] and list(beats[1:4]) == words[1:4]
    assert beats.raw.shape == (5, beat_bytes(cfg.data_bits))
    with pytest.raises(ValueError, match="beat bytes must be a 2-D uint8 array, not int64"):
        BeatArray(np.zeros((2, 3), dtype=np.int64))


def test_array_and_list_beats_save_and_read_the_same(tmp_path):
    """Steps holding byte arrays give the same file and data stream as steps holding ints,
    also when the file is written in several chunks."""
    import numpy as np
    from sparsecim.hw import trace as trace_module
    from sparsecim.hw.isa import pack_weight_row_bytes, words_to_bytes
    from sparsecim.hw.trace import BeatArray

    rng = np.random.default_rng(1)
    for cfg in (preset("tiny"), preset("flexcim")):
        as_list, as_array = Trace(cfg), Trace(cfg)
        for count in (3, 1, 7):
            weights = rng.integers(-128, 128, size=(count, cfg.cols))
            cmd = Command(Opcode.LOAD_W, row=0, count=count)
            as_list.append(cmd, pack_weight_rows(cfg, weights))
            as_array.append(cmd, BeatArray(pack_weight_row_bytes(cfg, weights)))
        as_list.append(Command(Opcode.END))
        as_array.append(Command(Opcode.END))
        assert as_array.to_text() == as_list.to_text()
        assert as_array.data == as_list.data and as_array.data_beats == 11
        expected = words_to_bytes(as_list.data, -(-cfg.data_bits // 8))
        assert np.array_equal(as_array.data_array(), expected)
        assert np.array_equal(as_list.data_array(extra=2)[:11], expected)
        path = tmp_path / f"{cfg.slug}.trace"
        old_chunk = trace_module._SAVE_CHUNK
        trace_module._SAVE_CHUNK = 4
        try:
            as_array.save(path)
        finally:
            trace_module._SAVE_CHUNK = old_chunk
        assert path.read_text() == as_list.to_text()
        assert Trace.load(path).data == as_list.data
