"""The Monarch evaluation: plans, whole-model figures against hand counts, the flexcim cycle
model against direct schedules, the report files, and the SmolLM2 projection on 2 blocks."""

import json

import numpy as np
import pytest
from sparsecim.hw.config import preset
from sparsecim.sw.blockdiag_map import BlockDiagonal
from sparsecim.sw.experiments.monarch_eval import (
    flexcim_cycles,
    flexcim_layer_costs,
    main,
    model_figures,
    monarch_plan,
    smollm_projection,
)
from sparsecim.sw.golden import run_trace
from sparsecim.sw.model_shapes import AttentionShape, LinearShape, ModelShape, model_shape
from sparsecim.sw.monarch import monarch_project, relative_error
from sparsecim.sw.schedule import predict_counters
from sparsecim.sw.schedule.monarch import MAPPINGS, schedule_monarch


def test_plans():
    up = LinearShape("fc1", 1024, 4096, 1, 24)
    sq = monarch_plan(up, 64, "square")
    assert (sq.form, sq.pieces, sq.right, sq.left) == ("square", 4, BlockDiagonal(16, 64, 64),
                                                       BlockDiagonal(16, 64, 64))
    assert sq.parameters == 4 * 2 * 16 * 64 * 64
    rect = monarch_plan(up, 64, "rect")
    assert (rect.right, rect.left) == (BlockDiagonal(16, 64, 64), BlockDiagonal(16, 64, 256))
    down = monarch_plan(LinearShape("fc2", 4096, 1024, 1, 24), 64, "rect")
    assert (down.right, down.left) == (BlockDiagonal(16, 256, 64), BlockDiagonal(16, 64, 64))
    ffn = monarch_plan(LinearShape("up", 576, 1536, 1, 30), 24, "auto")
    assert ffn.form == "rect" and ffn.left == BlockDiagonal(24, 24, 64)
    ein = monarch_plan(LinearShape("k", 576, 192, 1, 30), 24, "einsum")
    assert (ein.right, ein.left) == (BlockDiagonal(24, 24, 12), BlockDiagonal(12, 24, 16))


def test_plan_errors():
    with pytest.raises(ValueError) as info:
        monarch_plan(LinearShape("up", 576, 1536, 1, 1), 64, "square")
    assert str(info.value) == ("square form needs min(in, out) = 576 to divide max = 1536 and "
                               "block 64 to divide 576")
    with pytest.raises(ValueError) as info:
        monarch_plan(LinearShape("up", 576, 1536, 1, 1), 64, "rect")
    assert str(info.value) == ("rect form needs block 64 to divide min(in, out) = 576 and "
                               "nblocks 9 to divide max = 1536")
    with pytest.raises(ValueError) as info:
        monarch_plan(LinearShape("up", 64, 64, 1, 1), 8, "dense")
    assert str(info.value) == "form must be one of 'auto', 'square', 'rect', 'einsum', not 'dense'"


def test_bert_large_against_hand_counts():
    """Per block: 4 square 1024 matrices and 2 FFN matrices of 4 pieces. Dense: 16 arrays a
    matrix; a piece: 4 + 4 arrays latency-opt, 1 + 1 capacity-opt."""
    fig = model_figures(model_shape("bert-large"), rows=256, cols=256, block=64, form="square")
    m = fig.mappings
    assert m["linear"].arrays == 24 * (4 * 16 + 2 * 64)
    assert m["latency"].arrays == 24 * 12 * 8
    assert m["capacity"].arrays == 24 * 12 * 2
    assert m["latency"].utilization == 0.25 and m["capacity"].utilization == 1.0
    assert fig.parameter_reduction == 8.0
    dense, att = 24 * 12 * 1024 ** 2, 24 * 2 * 1024 * 512
    assert fig.mac_reduction_with_attention == pytest.approx((dense + att) / (dense / 8 + att))
    assert fig.fewer_arrays("capacity", "linear") == 0.875
    assert fig.fewer_arrays("capacity", "latency") == 0.75
    # cycles: Linear 1 per layer, latency 2, capacity 16 + 16; pieces in parallel
    assert (m["linear"].cycles, m["latency"].cycles, m["capacity"].cycles) == \
        (24 * 6, 24 * 6 * 2, 24 * 6 * 32)
    assert m["capacity"].passes == 24 * 12 * 32
    assert m["capacity"].weight_bytes == m["capacity"].arrays * 65536


@pytest.mark.parametrize("mapping", MAPPINGS)
def test_flexcim_cycles_against_direct_schedules(mapping):
    model = ModelShape("toy", 64, (LinearShape("a", 64, 64, 2, 3),
                                   LinearShape("b", 64, 128, 1, 3),
                                   LinearShape("c", 48, 48, 1, 3)),
                       (AttentionShape("self", 1, 64, 1, 3),), "test")
    got = flexcim_cycles(model, tokens=2)
    cfg = preset("flexcim")
    rng = np.random.default_rng(5)
    sched = schedule_monarch(cfg, rng.integers(-128, 128, (2, 64)),
                             rng.integers(-128, 128, (8, 8, 8)),
                             rng.integers(-128, 128, (8, 8, 8)), shift=3, mapping=mapping)
    monarch = run_trace(sched.trace).counters["total"]
    dense = (6 * predict_counters(cfg, 64, 64, 2)["total"]
             + 3 * predict_counters(cfg, 64, 128, 2)["total"])
    assert got["dense"] == dense
    assert got[mapping] == (6 + 3 * 2) * monarch
    assert got["speedup"][mapping] == dense / got[mapping]
    assert list(got["unscheduled"]) == ["c"]
    assert got["monarch"]["b"] == {"d": 64, "b": 8, "pieces": 2}


def test_flexcim_layer_costs_follow_the_schedules():
    rows = flexcim_layer_costs(blocks=(8,), tokens=(1, 3))
    assert [r["mapping"] for r in rows] == list(MAPPINGS)
    cfg = preset("flexcim")
    rng = np.random.default_rng(2)
    for row in rows:
        for t in (1, 3):
            sched = schedule_monarch(cfg, rng.integers(-128, 128, (t, 64)),
                                     rng.integers(-128, 128, (8, 8, 8)),
                                     rng.integers(-128, 128, (8, 8, 8)), shift=4,
                                     mapping=row["mapping"])
            total = run_trace(sched.trace).counters["total"]
            assert row["cycles_per_token"][t] == total / t
        # Capacity packs the 8x8 blocks k² = 16 to a sub-macro, latency k = 4 on its diagonal.
    by = {r["mapping"]: r for r in rows}
    assert by["capacity"]["utilization"] > by["latency"]["utilization"]
    assert by["capacity"]["loads"] < by["latency"]["loads"]


def test_main_writes_report(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--tokens", "1"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    bert = report["paper_models"]["bert-large"]["square"]
    assert bert["parameter_reduction"] == 8.0
    assert bert["mappings"]["capacity"]["arrays"] == 576
    md = (tmp_path / "report.md").read_text()
    assert "| parameters, dense / Monarch | 8.00× | 8.00× | 10.67× |" in md
    assert "## Why ours differ from the paper" in md
    assert "bert-large: parameters 8.00x fewer (paper 8x)" in capsys.readouterr().out


def test_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "--smollm" in capsys.readouterr().out


@pytest.fixture(scope="module")
def smollm2():
    pytest.importorskip("gguf")
    from sparsecim.sw.smollm import load_smollm2
    return load_smollm2(num_blocks=2)


def test_smollm_projection_on_two_blocks(smollm2):
    from sparsecim.sw.smollm import perplexity
    windows = np.asarray([smollm2.encode("The quick brown fox jumps over the lazy dog. " * 3)
                          [:24]] * 2)
    res = smollm_projection(smollm2, windows, kinds=("all",))
    assert len(res["layers"]) == 14
    w = smollm2.blocks[1].linears["up"]
    layer = next(x for x in res["layers"] if x["block"] == 1 and x["name"] == "up")
    assert (layer["k"], layer["j"]) == (24, 32)
    assert layer["error"] == pytest.approx(relative_error(w, monarch_project(w)), rel=1e-12)
    assert 0 < layer["error"] < 1
    assert res["ppl"]["dense"] == pytest.approx(perplexity(smollm2, windows), rel=1e-6)
    assert res["ppl"]["all"] > res["ppl"]["dense"]
    assert res["kept"]["q"] == pytest.approx(2 * 24 ** 3 / 576 ** 2)
    with pytest.raises(ValueError) as info:
        smollm_projection(smollm2, windows, kinds=("mlp",))
    assert str(info.value) == "kinds must be among 'all', 'attention', 'ffn', not 'mlp'"
