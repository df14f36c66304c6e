"""Run notebooks top to bottom, slow cells included, and keep their outputs (what the documentation shows).

`nbdev_test` skips cells flagged `#| slow`; their committed outputs come from running the notebook with this
script after a change they depend on (a retrained bundled model, a sampler change). Needs `pip install -e ".[dev]"`.

    python tools/execute.py nbs/05_ddpm.ipynb nbs/06_ddim.ipynb      # or: python tools/execute.py nbs/*.ipynb
    python tools/execute.py --skip-slow nbs/11_edm.ipynb              # refresh the fast cells, keep the slow cells' outputs
    python tools/execute.py --skip-slow nbs/13_distill.ipynb --slow-cells 53 58     # ... and these slow cells too
"""
import argparse, subprocess, sys, time
from pathlib import Path

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('notebooks', nargs='+')
    p.add_argument('--timeout', type=int, default=7200, help='seconds allowed for one cell')
    p.add_argument('--skip-slow', action='store_true', help='do not run cells flagged #| slow; keep their committed outputs')
    p.add_argument('--slow-cells', type=int, nargs='*', default=[], help='with --skip-slow: slow cells to run all the same (their indexes)')
    a = p.parse_args()
    import nbformat, nbclient
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
            nbformat.write(nb, path)          # keep what ran (hours of slow cells, maybe); the failed cell shows its error
            print(f'{path}: cell {i} failed; the outputs of the cells before it are written', file=sys.stderr, flush=True)
            raise SystemExit(1)
        nbformat.write(nb, path)
        subprocess.run([str(Path(sys.executable).parent/'nbdev_clean'), '--fname', str(path)], check=True)
        print(f'{path}: {time.monotonic() - t0:.0f} s', flush=True)

if __name__ == '__main__': main()
