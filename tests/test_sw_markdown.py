"""The shared Markdown writer against hand-written Markdown."""

import pytest
from sparsecim.sw.experiments import markdown_table as experiments_table
from sparsecim.sw.markdown import bullets, cell, image, markdown_table, section, table_lines


def test_table_compact_left_by_default():
    text = markdown_table(["a", "bb"], [[1, "x"], [2.5, None]])
    assert text == ("| a | bb |\n"
                    "|---|---|\n"
                    "| 1 | x |\n"
                    "| 2.5 | None |")


def test_table_spaced_with_alignment():
    lines = table_lines(["layer", "cycles", "share"], [["q", "1,024", "50.0%"]], "lrr",
                        compact=False)
    assert lines == ["| layer | cycles | share |",
                     "| --- | ---: | ---: |",
                     "| q | 1,024 | 50.0% |"]


def test_table_compact_with_alignment():
    assert table_lines(["best in", "value", "point"], [], "lrl") == [
        "| best in | value | point |", "|---|---:|---|"]


def test_empty_cells_are_one_space_and_short_rows_close_a_table():
    lines = table_lines(["", "decode"], [["", "3"], ["", "", "... 2 more"]], "rl")
    assert lines == ["| | decode |", "|---:|---|", "| | 3 |", "| | | ... 2 more |"]


def test_table_without_rows_is_header_and_rule():
    assert markdown_table(["x"], []) == "| x |\n|---|"


@pytest.mark.parametrize("align", ["lr", "lrc", "LRL"])
def test_bad_align_is_one_line_naming_it(align):
    with pytest.raises(ValueError) as info:
        table_lines(["a", "b", "c"], [], align)
    assert str(info.value) == f"table align must be one of l, r per column (3), not {align!r}"


def test_cell():
    assert cell(None) == "-"
    assert cell(None, ",.1f", none="not modelled") == "not modelled"
    assert cell(True) == "yes" and cell(False) == "no"
    assert cell(1234.56, ",.1f") == "1,234.6"
    assert cell(7, ",.1f") == "7.0"
    assert cell(0.000123456, ".4g") == "0.0001235"
    assert cell("text") == "text"


def test_section_bullets_image():
    assert section("Plots") == ["", "## Plots", ""]
    assert section("Detail", 3) == ["", "### Detail", ""]
    assert bullets(["a", 2]) == ["- a", "- 2"]
    assert image("cycles", "/tmp/run/cycles.png") == "![cycles](cycles.png)"


def test_experiments_reexport_the_one_writer():
    assert experiments_table is markdown_table
