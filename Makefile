# Two commands do all the set-up: `make demo` and `make test`. Both install what is missing
# (one venv, .venv, for the project, its tests and the managed ComfyUI) and reuse what is there.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.discomfort-installed
PYTEST_ARGS ?=
# `make test` also runs the store and graph-core tests on these Pythons (pyenv's, else PATH's),
# each in a small venv inside .venv made once, with numpy and no torch (a multi-GB download for
# each), so the tests that need torch skip there: scripts/test_pythons.sh. A Python not found is
# skipped with a line saying so; `make test OTHER_PYTHONS=` skips them all.
OTHER_PYTHONS ?= 3.12 3.13
CORE_TESTS := tests/test_store.py tests/test_store_processes.py tests/test_convert.py \
              tests/test_stitch.py tests/test_refs_unit.py tests/test_seeds.py \
              tests/test_workflow_model.py tests/test_prepare.py tests/test_protocol.py

.PHONY: setup browser-deps demo lint test test-pythons bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/install_comfyui.py scripts/constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed: make PYTHON=python3.11 ...")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) scripts/install_comfyui.py
	$(PY) -m pip install --disable-pip-version-check -q -c scripts/constraints.txt -e '.[test]'
	@touch $@

demo: setup
	$(PY) -m discomfort.demo

# The editor tests drive Debian's chromium (never `playwright install`): installed when missing.
browser-deps:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  { echo "the editor tests need Debian's chromium: sudo apt-get install chromium"; exit 1; }

# ruff (style, likely bugs, import order) and mypy (the library's types): pyproject.toml's
# [tool.ruff] and [tool.mypy] say what each checks.
lint: setup
	$(VENV)/bin/ruff check discomfort tests scripts benchmarks
	$(VENV)/bin/mypy

test: setup lint browser-deps test-pythons
	$(VENV)/bin/pytest tests $(PYTEST_ARGS)

# The core tests on each of OTHER_PYTHONS (PYTEST_ARGS is for the main run only).
test-pythons:
	@sh scripts/test_pythons.sh "$(OTHER_PYTHONS)" $(CORE_TESTS)

bench: setup
	$(PY) benchmarks/context_bench.py
	$(PY) benchmarks/run_bench.py
	$(PY) benchmarks/ref_bench.py
	$(PY) benchmarks/generation_bench.py
	$(PY) benchmarks/scale_bench.py
	$(PY) benchmarks/remote_bench.py
	$(PY) benchmarks/ray_bench.py

clean:
	rm -rf $(VENV) build *.egg-info
