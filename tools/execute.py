"""Run notebooks top to bottom as a reader's Run All does, slow cells included, and keep their outputs.

`nbdev_test` skips cells flagged `#| slow`; their committed outputs come from running the notebook with this
script. Every chapter runs in reader mode by default (its `FULL_RUN = False` switch loads what the long runs
produced), so this is also the check that each chapter's Run All fits the course's ten minutes on two cores:
it prints each notebook's wall-clock time and fails when a notebook changed anything inside the installed
`diffnb` package directory (a notebook never writes there). Needs `pip install -e ".[dev]"`.

    python tools/execute.py nbs/05_ddpm.ipynb nbs/06_ddim.ipynb      # or: python tools/execute.py nbs/*.ipynb
    python tools/execute.py --skip-slow nbs/11_edm.ipynb              # refresh the fast cells, keep the slow cells' outputs
    python tools/execute.py --skip-slow nbs/13_distill.ipynb --slow-cells 53 58     # ... and these slow cells too
    python tools/execute.py --no-write nbs/*.ipynb --times runs/times.json  # time Run All, leave the notebooks as they are
"""
import argparse, hashlib, json, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def package_fingerprint():
    "name -> sha256 of every file in the diffnb package directory (caches excluded)"
    pkg = ROOT/'diffnb'
    return {str(p.relative_to(pkg)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(pkg.rglob('*')) if p.is_file() and '__pycache__' not in p.parts}

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('notebooks', nargs='+')
    p.add_argument('--timeout', type=int, default=7200, help='seconds allowed for one cell')
    p.add_argument('--skip-slow', action='store_true', help='do not run cells flagged #| slow; keep their committed outputs')
    p.add_argument('--slow-cells', type=int, nargs='*', default=[], help='with --skip-slow: slow cells to run all the same (their indexes)')
    p.add_argument('--no-write', action='store_true', help='run and time the notebooks, but do not write their outputs back')
    p.add_argument('--times', help='append {notebook: seconds} to this JSON file')
    a = p.parse_args()
    import nbformat, nbclient
    before, times = package_fingerprint(), {}
    for path in map(Path, a.notebooks):
        t0 = time.monotonic()
        nb = nbformat.read(path, as_version=4)
        client = nbclient.NotebookClient(nb, timeout=a.timeout, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}})
        try:
            with client.setup_kernel():
                for i, cell in enumerate(nb.cells):
                    if cell.cell_type != 'code': continue
                    if a.skip_slow and cell.source.lstrip().startswith('#| slow') and i not in a.slow_cells: continue
                    client.execute_cell(cell, i)
        except nbclient.exceptions.CellExecutionError:
            if not a.no_write: nbformat.write(nb, path)   # keep what ran; the failed cell shows its error
            print(f'{path}: cell {i} failed' + ('' if a.no_write else '; the outputs of the cells before it are written'), file=sys.stderr, flush=True)
            raise SystemExit(1)
        times[str(path)] = round(time.monotonic() - t0, 1)
        if not a.no_write:
            nbformat.write(nb, path)
            subprocess.run([str(Path(sys.executable).parent/'nbdev_clean'), '--fname', str(path)], check=True)
        print(f'{path}: {times[str(path)]:.0f} s', flush=True)
    if a.times:
        out = Path(a.times); out.parent.mkdir(parents=True, exist_ok=True)
        old = json.loads(out.read_text()) if out.exists() else {}
        out.write_text(json.dumps({**old, **times}, indent=1))
    after = package_fingerprint()
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    if changed:
        print(f'the notebooks changed the package directory diffnb/: {", ".join(changed)}', file=sys.stderr)
        raise SystemExit(1)

if __name__ == '__main__': main()
