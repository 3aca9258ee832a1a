"""Sweeps: the spec's errors, the cache, resume, failures kept, executors agree, and a point
equals ``sparsecim run`` of the same settings."""

import csv
import math

import pytest
from sparsecim.tb.sweep import (
    AXES,
    SweepError,
    evaluate_point,
    load_spec,
    read_table,
    run_sweep,
)

SMALL = """
[sweep]
macro = ["tiny", "flexcim"]
model = ["smollm2-135m", "bert-large"]
sparsify = ["dense", "wanda"]
pattern = ["2:4", "1:8"]
tokens = [1, 8]
"""


def _spec(tmp_path, text, name="spec.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _table(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("text,message", [
    ("[sweep]\nmacros = ['tiny']\n",
     "[sweep]: unknown axis 'macros'; axes are " + ", ".join(AXES)),
    ("[sweep]\npattern = []\n", "[sweep]: axis pattern must be a non-empty list, not []"),
    ("[sweep]\nmacro = ['tiny', 'huge']\n",
     "[sweep] macro: preset must be one of "),
    ("[sweep]\nmodel = ['smollm2']\n",
     "[sweep] model: model must be a layer-shape table (bert-large, "),
    ("[sweep]\nsparsify = ['flow']\n",
     "[sweep] sparsify: sparsify must be one of dense, magnitude, wanda, not 'flow'"),
    ("[sweep]\ntokens = [0]\n", "[sweep] tokens: tokens must be positive integers, not 0"),
    ("[[point]]\npattern = ['2:4']\n",
     "point 1: pattern must be one value in a [[point]], not the list ['2:4'] (lists go in "
     "[sweep])"),
    ("[sweeps]\n", "unknown table 'sweeps'; a spec has [sweep] and [[point]] tables"),
    ("", "has no points: give a [sweep] table or [[point]] tables"),
])
def test_spec_errors_are_one_line_naming_the_value(tmp_path, text, message):
    path = _spec(tmp_path, text)
    with pytest.raises(SweepError) as info:
        load_spec(path)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"sweep spec {path}")
    assert message in text


def test_unknown_preset_message_names_it(tmp_path):
    with pytest.raises(SweepError, match=r"not 'huge'"):
        load_spec(_spec(tmp_path, "[sweep]\nmacro = ['huge']\n"))


def test_cli_bad_spec_is_one_line_exit_2(tmp_path, capsys):
    from sparsecim.tb.cli import main

    path = _spec(tmp_path, "[sweep]\nmacros = ['tiny']\n")
    status = main(["sweep", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2
    assert err == (f"sparsecim: error: sweep spec {path} [sweep]: unknown axis 'macros'; axes "
                   f"are {', '.join(AXES)}\n")


def test_dense_points_collapse_over_patterns(tmp_path):
    spec = load_spec(_spec(tmp_path, SMALL))
    # 2 macros x 2 models x 2 tokens x (dense + wanda x 2 patterns)
    assert len(spec.points) == 2 * 2 * 2 * 3
    assert len({p["key"] for p in spec.points}) == len(spec.points)


def test_rerun_computes_nothing_and_gives_the_same_table(tmp_path):
    spec = load_spec(_spec(tmp_path, SMALL))
    first = run_sweep(spec, tmp_path / "out", executor="inline")
    table = (tmp_path / "out" / "points.csv").read_text()
    again = run_sweep(spec, tmp_path / "out", executor="inline")
    assert (first.computed, first.cached) == (len(spec.points), 0)
    assert (again.computed, again.cached) == (0, len(spec.points))
    assert (tmp_path / "out" / "points.csv").read_text() == table
    # One row per layer per point plus a total.
    rows = read_table(tmp_path / "out" / "points.csv")
    layers = {"smollm2-135m": 7, "bert-large": 6}
    assert len(rows) == sum(layers[p["model"]] + 1 for p in spec.points)


def test_interrupted_sweep_resumes_where_it_stopped(tmp_path):
    spec = load_spec(_spec(tmp_path, SMALL))
    whole = run_sweep(spec, tmp_path / "whole", executor="inline")
    calls = []

    def stop(done, cached, failed, total):
        calls.append(done)
        if len(calls) == 3:  # after two batches of 4
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, tmp_path / "out", executor="inline", batch=4, on_progress=stop)
    # The table holds exactly the finished points' rows (a header, then 8 points).
    partial = _table(tmp_path / "out" / "points.csv")
    assert len({r["key"] for r in partial}) == 8
    resumed = run_sweep(spec, tmp_path / "out", executor="inline")
    assert (resumed.cached, resumed.computed) == (8, len(spec.points) - 8)
    assert (tmp_path / "out" / "points.csv").read_text() == \
        (tmp_path / "whole" / "points.csv").read_text()
    assert resumed.rows == whole.rows


def test_a_failed_point_is_a_row_with_its_error(tmp_path):
    text = ("[sweep]\nmacro = ['fpga', 'tiny']\nmodel = ['bert-large']\nsparsify = ['wanda']\n"
            "pattern = ['2:8']\n")
    result = run_sweep(load_spec(_spec(tmp_path, text)), tmp_path / "out", executor="inline")
    assert result.failed == 1
    failed = [r for r in read_table(result.table) if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["macro"] == "fpga" and failed[0]["layer"] == "total"
    assert failed[0]["error"].startswith("pattern 2:8 is not supported by preset fpga")
    assert {r["macro"] for r in read_table(result.table) if r["status"] == "ok"} == {"tiny"}
    again = run_sweep(load_spec(tmp_path / "spec.toml"), tmp_path / "out", executor="inline")
    assert (again.computed, again.failed) == (0, 1)  # the failure is cached, not dropped


@pytest.mark.parametrize("tokens", [1, 4])
def test_point_equals_run_of_the_same_settings(tmp_path, tokens):
    from sparsecim.sw.pipeline import load_settings
    from sparsecim.tb.run import run

    spec = load_spec(_spec(tmp_path, f"[[point]]\nmacro = 'flexcim'\nmodel = 'smollm2-135m'\n"
                                     f"sparsify = 'wanda'\npattern = '2:4'\ntokens = {tokens}\n"))
    result = evaluate_point(spec.points[0])
    settings = load_settings(overrides={
        "model": "smollm2-135m", "sparsify": "wanda", "pattern": "2:4", "preset": "flexcim",
        "tokens": tokens, "out": str(tmp_path / "run"), "plots": False})
    records = run(settings).records
    layers = result["rows"][:-1]
    assert [r["layer"] for r in layers] == [r.name for r in records]
    for row, record in zip(layers, records, strict=True):
        assert row["cycles"] == record.model_cycles
        assert row["macs"] == record.macs
        assert row["weight_bytes"] == record.weight_bytes
        assert row["arrays"] == record.arrays
        assert row["utilization"] == record.utilization
        # The run and the sweep price the same exact counts (sparsecim.sw.sweep_model).
        assert math.isclose(row["energy_pj"], record.energy["total_pj"], rel_tol=0, abs_tol=0)
    total = result["rows"][-1]
    assert total["cycles"] == sum(r.model_cycles for r in records)


def test_process_pool_equals_in_process(tmp_path):
    spec = load_spec(_spec(tmp_path, SMALL))
    inline = run_sweep(spec, tmp_path / "a", executor="inline")
    pooled = run_sweep(spec, tmp_path / "b", executor="process", workers=2)
    assert pooled.rows == inline.rows


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="Ray is the optional extra sparsecim[sweep]")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_equals_in_process(tmp_path, local_ray):
    spec = load_spec(_spec(tmp_path, SMALL))
    inline = run_sweep(spec, tmp_path / "a", executor="inline")
    on_ray = run_sweep(spec, tmp_path / "b", executor="ray", batch=5)
    assert on_ray.computed == len(spec.points)
    assert on_ray.rows == inline.rows
    # And one point's result, as a Ray task against this process.
    point = spec.points[-1]
    assert local_ray.get(local_ray.remote(evaluate_point).remote(point)) == evaluate_point(point)


def test_rtl_jobs_sample_tiles_by_seed(tmp_path):
    from sparsecim.tb.sweep_rtl import rtl_jobs

    spec = load_spec(_spec(tmp_path, SMALL))
    results = {p["key"]: {"status": "ok"} for p in spec.points}
    jobs = rtl_jobs(spec.points, results, 2, 7)
    assert jobs == rtl_jobs(spec.points, results, 2, 7)
    assert jobs != rtl_jobs(spec.points, results, 2, 8)
    # Per point and layer, 2 tiles (points the RTL cannot tell apart share their jobs).
    assert len({j["job"] for j in jobs}) == len(jobs)
    layers = {"smollm2-135m": 7, "bert-large": 6}
    assert len(jobs) == 2 * sum(layers[p["model"]] for p in spec.points)
    assert all(0 <= j["tile"] < -(-j["outputs"] // 4) for j in jobs if j["macro"] == "tiny")


@pytest.mark.cosim
def test_sweep_rtl_sample_passes_on_verilator(tmp_path, capsys):
    from sparsecim.tb.cli import main

    path = _spec(tmp_path, "[[point]]\nmacro = 'tiny'\nmodel = 'smollm2-135m'\n"
                           "sparsify = 'wanda'\npattern = '2:4'\ntokens = 2\n")
    status = main(["sweep", str(path), "--out", str(tmp_path / "out"), "--executor",
                   "inline", "--rtl-sample", "1", "--seed", "3", "--no-plots"])
    out = capsys.readouterr().out
    rows = _table(tmp_path / "out" / "rtl.csv")
    # One tile of each of smollm2's 7 linears (tiles chosen per layer name).
    assert [r["layer"] for r in rows] == ["q", "k", "v", "o", "gate", "up", "down"]
    assert all(r["passed"] == "True" for r in rows)
    assert all(r["rtl_cycles"] == r["model_cycles"] for r in rows)
    assert "7 of 7 sampled tiles passed" in out
    assert status == 0


def test_cli_sweep_prints_its_summary_and_writes_the_report(tmp_path, capsys):
    from sparsecim.tb.cli import main

    path = _spec(tmp_path, SMALL)
    status = main(["sweep", str(path), "--out", str(tmp_path / "out"), "--executor", "inline",
                   "--no-plots"])
    out = capsys.readouterr().out
    assert status == 0
    assert out.startswith(f"sparsecim sweep {path}: 24 points (24 computed, 0 cached, "
                          f"0 failed) in ")
    assert "smollm2-135m: 12 points" in out and "bert-large: 12 points" in out
    report = (tmp_path / "out" / "report.md").read_text()
    assert report.startswith("# Sweep report: 24 points")
    main(["sweep", str(path), "--out", str(tmp_path / "out"), "--executor", "inline",
          "--no-plots"])
    assert "(0 computed, 24 cached, 0 failed)" in capsys.readouterr().out


def _closed_port():
    """A local TCP port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("address,message", [
    ("127.0.0.1:{port}", "cannot reach the Ray cluster at '127.0.0.1:{port}': "),
    ("ray://127.0.0.1:{port}", "cannot reach the Ray cluster at 'ray://127.0.0.1:{port}': "),
    ("no-such-host.invalid:6379", "host 'no-such-host.invalid' does not resolve"),
    ("localhost", "--ray address must be host:port, ray://host:port or auto, not 'localhost'"),
    ("host:99999", "--ray address must be host:port"),
])
def test_unreachable_ray_address_fails_in_one_line(tmp_path, cli_main, address, message):
    # ray.init retries an unreachable GCS address for minutes; the probe refuses it at once.
    port = _closed_port()
    address, message = address.format(port=port), message.format(port=port)
    path = _spec(tmp_path, "[[point]]\nmacro = 'tiny'\n")
    status, out, err = cli_main("sweep", path, "--out", tmp_path / "out", "--ray", address)
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("sparsecim: error: ")
    assert message in err
    assert not (tmp_path / "out").exists()


@pytest.fixture
def fake_server():
    """``fake_server(reply)``: the address of a local TCP server that accepts one connection
    and sends ``reply`` (None: says nothing), on a thread."""
    import contextlib
    import socket
    import threading

    servers = []

    def start(reply):
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen()
        servers.append(server)

        def serve():
            conn, _ = server.accept()
            with conn, contextlib.suppress(OSError):  # the client may reset the connection
                conn.recv(64)
                conn.sendall(reply)
                conn.recv(64)  # until the client closes

        if reply is not None:
            threading.Thread(target=serve, daemon=True).start()
        return f"127.0.0.1:{server.getsockname()[1]}"

    yield start
    for server in servers:
        server.close()


def test_ray_probe_needs_a_grpc_answer_in_time(fake_server):
    from sparsecim.tb.sweep import probe_ray_address

    # Accepted (by the kernel) but never answered: a silent address gives up after timeout.
    silent = fake_server(None)
    with pytest.raises(SweepError, match=rf"^cannot reach the Ray cluster at '{silent}': no "
                                         r"answer from 127.0.0.1:\d+ within 0.2 s$"):
        probe_ray_address(silent, timeout=0.2)
    # Something else listening (not HTTP/2): refused too.
    other = fake_server(b"SSH-2.0-OpenSSH\r\n")
    with pytest.raises(SweepError, match="does not answer as a gRPC \\(HTTP/2\\) server$"):
        probe_ray_address(other)
    # An HTTP/2 server's SETTINGS frame (9-byte header, type 4): passes.
    probe_ray_address(fake_server(bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])))
    probe_ray_address(None)
    probe_ray_address("auto")


# The chip axis: chip = none (one macro), a chip preset, a TOML chip file or an inline table.
SMALL_CHIP = ("{macro = 'flexcim', macros = 4, clock_mhz = 250, weight_bw = 16, "
              "offchip_bytes = 1073741824, buffer_bytes = 65536}")


@pytest.mark.parametrize("text,message", [
    ("[sweep]\nchip = ['huge']\n",
     "[sweep] chip: chip must be one of edge, flexcim2, large, tiny4 or a .toml file, not "
     "'huge' (or none)"),
    ("[sweep]\nchip = [3]\n",
     "[sweep] chip: chip must be none, a chip preset, a TOML chip file or a table, not 3"),
    ("[sweep]\nchip = [{macro = 'tiny', macros = 0, clock_mhz = 100, weight_bw = 4, "
     "offchip_bytes = 1, buffer_bytes = 4096}]\n",
     "[sweep] chip: chip: macros must be an integer from 1 to 4096, not 0"),
    ("[sweep]\nchip = [{macro = 'huge', macros = 2}]\n",
     "[sweep] chip: chip: preset must be one of "),
    ("[[point]]\nchip = 'nowhere.toml'\n", "point 1 chip: chip file "),
])
def test_chip_axis_errors_are_one_line(tmp_path, text, message):
    path = _spec(tmp_path, text)
    with pytest.raises(SweepError) as info:
        load_spec(path)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(f"sweep spec {path}")
    assert message in str(info.value)


def test_chip_points_collapse_the_macro_axis(tmp_path):
    spec = load_spec(_spec(tmp_path, "[sweep]\nmacro = ['tiny', 'flexcim']\n"
                                     "chip = ['none', 'edge', 'tiny4']\n"))
    labels = sorted((p["chip"], p["macro"]) for p in spec.points)
    # Two macro points, one point per chip (its own macro).
    assert labels == [("edge", "flexcim"), ("none", "flexcim"), ("none", "tiny"),
                      ("tiny4", "tiny")]
    # A macro point's key does not depend on the chip axis being there (chip none).
    plain = load_spec(_spec(tmp_path, "[sweep]\nmacro = ['tiny']\n", "plain.toml"))
    assert plain.points[0]["key"] == next(p["key"] for p in spec.points
                                          if p["chip"] == "none" and p["macro"] == "tiny")


def test_chip_file_is_read_beside_the_spec(tmp_path):
    from sparsecim.hw.config import chip_preset, chip_toml

    (tmp_path / "mine.toml").write_text(chip_toml(chip_preset("edge")), encoding="utf-8")
    spec = load_spec(_spec(tmp_path, "[sweep]\nchip = ['mine.toml', 'edge']\n"))
    # The same chip under two names: one point (the key is the chip's fields).
    assert len(spec.points) == 1


@pytest.mark.parametrize("tokens", [1, 4])
def test_chip_point_equals_chip_sched_figures(tmp_path, tokens):
    from sparsecim.hw.config import ChipConfig
    from sparsecim.sw.chip_energy import model_chip_energy
    from sparsecim.sw.energy import load_tech
    from sparsecim.sw.schedule.chip import model_figures, model_layers

    spec = load_spec(_spec(tmp_path, f"[[point]]\nmodel = 'smollm2-135m'\nsparsify = 'wanda'\n"
                                     f"pattern = '2:4'\ntokens = {tokens}\n"
                                     f"chip = {SMALL_CHIP}\n"))
    result = evaluate_point(spec.points[0])
    assert result["status"] == "ok", result["error"]
    chip = ChipConfig.from_dict(spec.points[0]["chip_config"])
    # Independently: every linear of the model placed and priced by chip-sched, per layer.
    figures = model_figures(chip, model_layers("smollm2-135m", (2, 4)), prefill_tokens=tokens)
    energy = model_chip_energy(chip, figures, load_tech("22nm"))
    run = "decode" if tokens == 1 else "prefill"
    by_row: dict = {}
    for fig, lay in zip(figures, energy["layers"], strict=True):
        row = fig.layer.name.split(".", 1)[1]
        cycles, pj = by_row.get(row, (0, 0.0))
        by_row[row] = (cycles + (fig.decode if tokens == 1 else fig.prefill)["total"],
                       pj + lay[run]["total_pj"])
    layers, total = result["rows"][:-1], result["rows"][-1]
    assert {r["layer"]: (r["cycles"], pytest.approx(r["energy_pj"], rel=1e-12))
            for r in layers} == by_row
    assert total["cycles_per_token"] == energy[run]["cycles_per_token"]
    assert total["pj_per_token"] == pytest.approx(energy[run]["pj_per_token"], rel=1e-12)
    assert total["tokens_per_s"] == pytest.approx(250e6 / total["cycles_per_token"], rel=1e-12)
    assert total["offchip_bytes"] / tokens == pytest.approx(
        energy[run]["offchip_bytes_per_token"], rel=1e-12)
    assert total["copies"] == len(figures) == 30 * 7
    assert total["resident"] == sum(f.resident for f in figures)
    assert {r["chip"] for r in result["rows"]} == {spec.points[0]["chip"]}


def test_tokens_per_second_is_the_clock_over_cycles_per_token(tmp_path):
    from sparsecim.sw.energy import load_tech

    spec = load_spec(_spec(tmp_path, "[[point]]\nmacro = 'tiny'\nmodel = 'smollm2-135m'\n"
                                     "tokens = 4\n"))
    result = evaluate_point(spec.points[0])
    clock = load_tech("22nm")["operating.clock_mhz"] * 1e6   # one macro: the tech file's
    for row in result["rows"]:
        assert row["cycles_per_token"] == row["cycles"] / 4
        assert row["tokens_per_s"] == clock / row["cycles_per_token"]
    assert result["rows"][-1]["chip"] == "none"


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    """The hand-written tiny llama checkpoint (conftest) with a word-level tokenizer."""
    import tokenizers
    from conftest import VOCAB, llama_config, llama_tensors, write_sharded

    folder = tmp_path_factory.mktemp("weighted") / "ckpt"
    write_sharded(folder, llama_tensors(seed=5), llama_config())
    words = {f"w{i}": i + 1 for i in range(VOCAB - 1)}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({"[UNK]": 0} | words,
                                                           unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tok.save(str(folder / "tokenizer.json"))
    return folder


def test_weighted_point_carries_the_runs_quality(tmp_path, llama_folder):
    from sparsecim.sw.pipeline import load_settings
    from sparsecim.tb.run import run

    spec = load_spec(_spec(llama_folder.parent, "[sweep]\nmodel = ['ckpt']\nmacro = ['tiny']\n"
                                                "sparsify = ['dense', 'wanda']\n"
                                                "tokens = [2]\n", "w.toml"))
    results = {p["sparsify"]: evaluate_point(p) for p in spec.points}
    dense, wanda = (results[s]["rows"][-1] for s in ("dense", "wanda"))
    assert dense["status"] == wanda["status"] == "ok", (dense["error"], wanda["error"])
    # The same quality as `sparsecim run` of the same settings on every block.
    settings = load_settings(overrides={
        "model": str(llama_folder), "sparsify": "wanda", "pattern": "2:4", "preset": "tiny",
        "tokens": 2, "blocks": 1024, "out": str(tmp_path / "run"), "plots": False})
    quality = run(settings).summary["quality"]
    assert (wanda["perplexity"], wanda["perplexity_dense"]) == (quality["sparse"],
                                                                quality["dense"])
    assert dense["perplexity"] == dense["perplexity_dense"] == quality["dense"]
    assert wanda["perplexity"] > dense["perplexity"]
    # The figures are those of its linear shapes: every linear of both blocks.
    assert wanda["copies"] == 2 * 7
    assert wanda["cycles_per_token"] < dense["cycles_per_token"]
    # The report's front for the checkpoint includes the perplexity.
    from sparsecim.tb.sweep_report import summary

    result = run_sweep(spec, tmp_path / "out", executor="inline")
    assert "perplexity" in summary(result)["models"]["ckpt"]["objectives"]


def test_weighted_model_key_follows_its_files(tmp_path, llama_folder):
    spec = _spec(llama_folder.parent, "[[point]]\nmodel = 'ckpt'\nmacro = 'tiny'\n", "k.toml")
    before = load_spec(spec).points[0]["key"]
    (llama_folder / "extra.txt").write_text("changed", encoding="utf-8")
    try:
        assert load_spec(spec).points[0]["key"] != before
    finally:
        (llama_folder / "extra.txt").unlink()
    assert load_spec(spec).points[0]["key"] == before
    with pytest.raises(SweepError, match=r"point 1 model: model checkpoint .*nothing.gguf "
                                         r"does not exist$"):
        load_spec(_spec(tmp_path, "[[point]]\nmodel = 'nothing.gguf'\n"))
