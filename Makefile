# The README's two commands: `make demo` and `make test`. Both set up .venv first (once; again
# whenever pyproject.toml changes). PYTHON picks the interpreter that creates the venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROFILE ?= cpu
EXTRAS ?= cpu,dev,lab

.PHONY: setup demo test test-fast reproduce assignments notebooks bench bench-engine bench-grpo bench-parsing lab clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

demo: setup
	$(BIN)/python -m apr_mini demo --profile $(PROFILE)

# Unit tests, property tests, fixture agreement and every notebook (nbmake), in the tiny profile.
# One torch thread per process: beside a training job, 2 threads fight for the cores (notebook 05 took
# 366 s and timed out with 2 threads, 41 s with 1, two 1-thread training jobs running; measured 2026-12-02)
test: setup
	OMP_NUM_THREADS=1 APR_PROFILE=tiny $(BIN)/python -m pytest --nbmake tests notebooks

test-fast: setup
	OMP_NUM_THREADS=1 APR_PROFILE=tiny $(BIN)/python -m pytest tests

# The paper's three claims with seeds and intervals (resumable; data/results/ for the cpu profile)
reproduce: setup
	$(BIN)/python -m apr_mini reproduce --profile $(PROFILE)

# The student versions of the course assignments (assignments/release/), made by nbgrader from assignments/source/
assignments: setup
	$(BIN)/python -m apr_mini assignments generate

# Every lesson run under cpu, its outputs (figures as PNG, drawn by Chrome or Chromium) stored so that it reads without running
notebooks: setup
	$(BIN)/python -m apr_mini notebooks

bench: setup
	$(BIN)/python benchmarks/bench_demonstrations.py

# Spawn/join engine on the shipped cpu checkpoints (about 20 minutes on 2 cores)
bench-engine: setup
	$(BIN)/python benchmarks/bench_engine.py

# One GRPO step of apr-mini's loop against one of TRL's GRPOTrainer, on the shipped cpu SoS+ model (a few minutes)
bench-grpo: setup
	$(BIN)/python benchmarks/bench_grpo.py

# The trace language's parsers on hostile 1 MB lines (seconds)
bench-parsing: setup
	$(BIN)/python benchmarks/bench_parsing.py

lab: setup
	$(BIN)/jupyter lab notebooks

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
