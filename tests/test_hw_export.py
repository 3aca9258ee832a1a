"""Top level signature, elaboration and Verilog export for every preset, and the export CLI."""

from __future__ import annotations

import re

import pytest
from amaranth.hdl import Fragment, Shape
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from sparsecim.hw import export, isa
from sparsecim.hw.config import CHIP_PRESETS, PRESETS, preset
from sparsecim.hw.top import Top


def test_top_signature_is_exactly_the_stream_and_status_contract():
    cfg = preset("tiny")
    top = Top(config=cfg)
    expected = wiring.Signature({
        "cmd": In(stream.Signature(isa.command_layout(cfg))),
        "data": In(stream.Signature(cfg.data_bits)),
        "result": Out(stream.Signature(isa.result_layout(cfg))),
        "status": Out(wiring.Signature({
            "done": Out(1),
            "error": Out(isa.ErrorCode),
            "counters": Out(isa.counters_layout(cfg)),
        })),
    })
    assert top.signature == expected
    Fragment.get(top, None)  # elaborates; an unelaborated component warns when collected


def _ports(verilog_text, module="sparsecim_top"):
    """{name: (direction, width)} of the ports of ``module``."""
    body = verilog_text[verilog_text.index(f"module {module}("):]
    body = body[:body.index("endmodule")]
    ports = {}
    for direction, msb, name in re.findall(r"^\s*(input|output)\s+(?:\[(\d+):0\]\s+)?(\w+);",
                                           body, re.MULTILINE):
        ports[name] = (direction, int(msb) + 1 if msb else 1)
    return ports


@pytest.mark.parametrize("name", [
    # flexcim takes minutes to convert, like paper.
    "tiny", pytest.param("flexcim", marks=pytest.mark.slow),
    pytest.param("paper", marks=pytest.mark.slow)])
def test_top_converts_to_verilog_with_ports_named_after_the_signature(name):
    cfg = PRESETS[name]
    top = Top(config=cfg)
    ports = _ports(export.convert(top))
    expected = {"clk": ("input", 1), "rst": ("input", 1)}
    for path, member in top.signature.members.flatten():
        if member.is_port:
            direction = "input" if member.flow == In else "output"
            expected["__".join(map(str, path))] = (direction, Shape.cast(member.shape).width)
    assert ports == expected


def test_export_cli_writes_preset_verilog(tmp_path, capsys):
    assert export.main(["--preset", "tiny", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "tiny" / "sparsecim_top.v").read_text()
    assert "module sparsecim_top(" in text
    assert "tiny" in capsys.readouterr().out


def test_export_cli_all_writes_every_preset(tmp_path, monkeypatch):
    monkeypatch.setattr(export, "PRESETS", {"tiny": PRESETS["tiny"]})
    assert export.main(["--preset", "all", "--out", str(tmp_path)]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"]
    assert export.verilog_text(PRESETS["tiny"]) == (tmp_path / "tiny" /
                                                    "sparsecim_top.v").read_text()


def test_export_cli_rejects_unknown_preset_with_a_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        export.main(["--preset", "huge", "--out", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (
        "python -m sparsecim.hw.export: error: --preset must be one of "
        f"{', '.join(PRESETS)} or 'all', not 'huge'")
    assert "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_export_cli_writes_a_chip(tmp_path, capsys):
    assert export.main(["--chip", "tiny4", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "chip-tiny4" / "sparsecim_chip.v").read_text()
    assert "module sparsecim_chip(" in text
    chip = CHIP_PRESETS["tiny4"]
    ports = _ports(text, "sparsecim_chip")
    width = isa.chip_command_layout(chip).size
    assert ports["cmd__payload"] == ("input", width)
    assert ports["status__error_macro"] == ("output", 3)   # range(K + 1) = 0..4
    assert ports["status__macros"] == ("output", 4 * isa.counters_layout(chip.macro).size)
    assert "chip tiny4" in capsys.readouterr().out


def test_export_cli_refuses_a_chip_too_large_to_convert(tmp_path, capsys):
    assert not export.chip_exportable(CHIP_PRESETS["large"])
    assert export.main(["--chip", "large", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "python -m sparsecim.hw.export: error: chip large: 2048 64-column macros, 33554432 "
        f"cells, is too large to convert to Verilog in reasonable time (limit "
        f"{export.CHIP_EXPORT_CELLS} cells; the conversion takes minutes per macro)"]
    assert not any(tmp_path.iterdir())


def test_export_cli_chip_all_skips_the_large_chip_with_a_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(export, "CHIP_PRESETS", {n: CHIP_PRESETS[n] for n in ("tiny4", "large")})
    assert export.main(["--chip", "all", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["chip-tiny4"]
    assert "skipped chip large: " in out


def test_export_cli_rejects_unknown_chip_and_both_flags(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        export.main(["--chip", "huge", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "python -m sparsecim.hw.export: error: --chip must be one of "
        f"{', '.join(CHIP_PRESETS)} or 'all', not 'huge'")
    with pytest.raises(SystemExit) as exc:
        export.main(["--chip", "tiny4", "--preset", "tiny"])
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
