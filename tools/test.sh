#!/usr/bin/env bash
# Every check of the project, in the order a failure is cheapest to find. Run after `bash tools/setup.sh dev`.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH" MPLBACKEND=Agg
step() { printf '\n== %s\n' "$*"; }

step "the library is in step with the notebooks (nbdev_export changes nothing)"
nbdev_export
git add -N diffnb 2>/dev/null || true
git diff --exit-code --stat -- diffnb

step "the notebooks are clean (nbdev_clean changes nothing)"
nbdev_clean
git diff --exit-code --stat -- nbs

step "README.md is made from nbs/index.ipynb"
python tools/make_readme.py --check

step "the notebooks run top to bottom (nbdev_test; slow cells skipped)"
OMP_NUM_THREADS=1 nbdev_test --n_workers 2 --timing    # two notebooks at a time, one thread each: two cores, no oversubscription

step "running the notebooks left the package directory as it was (a notebook never writes into diffnb/)"
git diff --exit-code --stat -- diffnb
test -z "$(git status --porcelain --untracked-files=all -- diffnb)" || { git status --short -- diffnb; exit 1; }

step "the installed package, from the outside (pytest)"
python -m pytest tests -q -p no:cacheprovider

step "the documentation (nbdev's processing, sidebar, API entries, figures)"
python tools/check_docs.py
