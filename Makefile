# Two commands do all the set-up: `make demo` and `make test`. Both install what is missing
# (one venv, .venv, for the project, its tests and the managed ComfyUI) and reuse what is there.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.discomfort-installed
PYTEST_ARGS ?=

.PHONY: setup browser-deps demo test bench clean

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

test: setup browser-deps
	$(VENV)/bin/pytest tests $(PYTEST_ARGS)

bench: setup
	$(PY) benchmarks/context_bench.py
	$(PY) benchmarks/run_bench.py
	$(PY) benchmarks/ref_bench.py

clean:
	rm -rf $(VENV) build *.egg-info
