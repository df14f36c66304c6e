#!/usr/bin/env bash
# Set up a fresh machine: a virtual environment in .venv with diffnb installed.
#   bash tools/setup.sh       # the package and its command line
#   bash tools/setup.sh dev   # editable, with the notebook and test tools (nbdev 2, pytest, diffusers)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if [ "${1:-}" = dev ]; then
  .venv/bin/pip install -q -e ".[dev]"
  .venv/bin/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (diffnb)" >/dev/null
else
  .venv/bin/pip install -q .
fi
.venv/bin/pip check
echo "diffnb installed in .venv ($(.venv/bin/python -c 'import diffnb; print(diffnb.__version__)'))"
