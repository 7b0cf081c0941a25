# `make demo` and `make test` are all a fresh machine needs: both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install bytecode demo test soak bench clean

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Our modules' bytecode, as pip writes it for a regular install. An editable install leaves that
# to the first import, which never writes it where PYTHONDONTWRITEBYTECODE is set: every
# `hector-sync` start then compiles the whole package again (0.1-0.15 s). Files up to date are skipped.
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q hector_sync

# The UI on :3000, or on a free port when 3000 is busy; `make demo PORT=3001` chooses (only on
# the command line: a PORT variable in the environment is some other program's).
demo: bytecode
	$(BIN)/hector-sync demo --ui $(if $(filter command line,$(origin PORT)),--port $(PORT))

test: bytecode
	$(BIN)/python -m pytest

# Minutes, not seconds: 5,000 CIs through every transient fault, a dozen SIGKILLs at random points.
soak: bytecode
	$(BIN)/python -m pytest -m soak --timeout 1800

# Every figure of docs/performance.md at 1,000,000 CIs (about 20 minutes on 2
# cores); BENCH_ARGS="--size 20000" for a quick look.
bench: bytecode
	$(BIN)/python benchmarks/run.py --json benchmarks/last-run.json $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .hector-sync build *.egg-info
