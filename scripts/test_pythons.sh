#!/bin/sh
# The store and graph-core tests on other Pythons: `make test-pythons`, part of `make test`.
#   scripts/test_pythons.sh "3.12 3.13" tests/test_store.py tests/test_convert.py ...
# Each Python X.Y gets a small venv inside .venv, .venv/pyX.Y, made once: numpy, cloudpickle,
# psutil, pytest and pytest-asyncio, pinned by scripts/constraints.txt, and the checkout
# (editable, no deps). No torch: a multi-GB download for each Python, so the tests that need it
# skip there. A venv is reused while its stamp is newer than pyproject.toml and the constraints
# and names the interpreter found now (pyenv's newest X.Y.Z, else a working pythonX.Y on PATH);
# else it is made anew. A version with no interpreter is skipped with a line saying so. Every
# version runs; any failure fails the script.
set -u
versions=$1
shift
cd "$(dirname "$0")/.." || exit 1

works() {  # $1 runs, and is Python $2
  [ -x "$1" ] && "$1" -c "import sys; sys.exit(sys.version_info[:2] != ($(echo "$2" | tr . ,)))" 2>/dev/null
}

find_python() {  # pyenv's newest X.Y.Z, else pythonX.Y on PATH (a pyenv shim counts if it works)
  root=$(pyenv root 2>/dev/null) || root=${PYENV_ROOT:-$HOME/.pyenv}
  for z in $(ls "$root/versions" 2>/dev/null | grep -E "^$(echo "$1" | sed 's/\./\\./')\.[0-9]+\$" | sort -t. -k3,3nr); do
    if works "$root/versions/$z/bin/python$1" "$1"; then echo "$root/versions/$z/bin/python$1"; return; fi
  done
  py=$(command -v "python$1" 2>/dev/null) && works "$py" "$1" && echo "$py"
}

failed=
for v in $versions; do
  py=$(find_python "$v")
  if [ -z "$py" ]; then
    echo "*** Python $v not found (no pyenv $v.*, no working python$v on PATH): its store and graph-core tests were SKIPPED"
    continue
  fi
  venv=.venv/py$v
  stamp=$venv/.discomfort-installed
  if ! { [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$py" ] && [ "$stamp" -nt pyproject.toml ] &&
         [ "$stamp" -nt scripts/constraints.txt ] && "$venv/bin/python" -c '' 2>/dev/null; }; then
    echo "--- Python $v: making $venv with $py"
    rm -f "$stamp"
    pip="$venv/bin/python -m pip install --disable-pip-version-check -q"
    "$py" -m venv --clear "$venv" &&
      $pip -c scripts/constraints.txt numpy cloudpickle psutil pytest pytest-asyncio &&
      $pip --no-deps -e . &&
      echo "$py" >"$stamp" || { echo "*** could not make $venv"; exit 1; }
  fi
  echo "--- Python $v ($py): $*"
  "$venv/bin/python" -m pytest "$@" -q || failed="$failed $v"
done
if [ -n "$failed" ]; then
  echo "*** the store and graph-core tests failed on Python$failed"
  exit 1
fi
