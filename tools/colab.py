"""Give every notebook its "Open in Colab" badge and the cell that sets Colab up (a no-op where diffnb is installed).

Both go right after the chapter's title (in the index, after the two commands the README opens with): a markdown cell with the badge (it shows on the documentation site, and the
index's shows in the README) and a hidden code cell that, on Colab or in any Python without diffnb, clones the
course (notebooks, bundled models, the saved results that reader mode loads), installs it with the notebook tools,
and continues from its `nbs/` folder (`eval: false` keeps nbdev's test and docs runs from executing it; where diffnb
is installed it does nothing, which tests/test_package.py checks). Run after adding a chapter; `tools/check_docs.py`
checks that none lacks them.

    python tools/colab.py            # add or refresh the two cells in nbs/*.ipynb
    python tools/colab.py --check    # only report notebooks without them
"""
import json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPO = 'diffnb/diffnb'
BADGE_ID, SETUP_ID = 'colab-badge', 'colab-setup'

SETUP = f'''#| hide
#| eval: false
def _on_colab():
    "On Colab, or in a Python without diffnb: install the course, then run from its nbs/ folder like a local Run All"
    # the course's repository holds the notebooks, the bundled models and the saved results that reader mode loads
    import importlib, importlib.util, os, subprocess, sys
    if importlib.util.find_spec('diffnb') is not None and not ('google.colab' in sys.modules and not os.path.isdir('results')):
        return                                               # installed here: nothing to do
    if not os.path.isdir('diffnb-course'):
        subprocess.run(['git', 'clone', '-q', '--depth', '1', 'https://github.com/{REPO}', 'diffnb-course'], check=True)
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', './diffnb-course[dev]'], check=True)
    importlib.invalidate_caches()
    os.chdir('diffnb-course/nbs')
_on_colab()'''

def badge(name:str)->str:
    url = f'https://colab.research.google.com/github/{REPO}/blob/main/nbs/{name}'
    return f'[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})'

def cell(kind:str, cid:str, text:str)->dict:
    c = dict(cell_type=kind, id=cid, metadata={}, source=text.splitlines(keepends=True))
    if kind == 'code': c.update(execution_count=None, outputs=[])
    return c

def missing(nb:dict, name:str)->list:
    "What a notebook lacks of the two cells (or has out of date)"
    cells = {c.get('id'): ''.join(c['source']) for c in nb['cells']}
    return [what for what, cid, text in (('badge', BADGE_ID, badge(name)), ('setup cell', SETUP_ID, SETUP)) if cells.get(cid) != text]

def add(nb:dict, name:str)->dict:
    cells = [c for c in nb['cells'] if c.get('id') not in (BADGE_ID, SETUP_ID)]
    title = next(i for i, c in enumerate(cells) if c['cell_type'] == 'markdown' and ''.join(c['source']).startswith('# '))
    if title + 1 < len(cells) and ''.join(cells[title + 1]['source']).startswith('```bash'): title += 1   # the README's commands come first
    nb['cells'] = cells[:title + 1] + [cell('markdown', BADGE_ID, badge(name)), cell('code', SETUP_ID, SETUP)] + cells[title + 1:]
    return nb

def main():
    check = '--check' in sys.argv
    bad = []
    for p in sorted((ROOT/'nbs').glob('*.ipynb')):
        nb = json.loads(p.read_text(encoding='utf-8'))
        lack = missing(nb, p.name)
        if not lack: continue
        if check: bad.append(f'{p.name}: no up-to-date Colab {" and ".join(lack)} (python tools/colab.py)')
        else: p.write_text(json.dumps(add(nb, p.name), indent=1, ensure_ascii=False) + '\n', encoding='utf-8')
    print('\n'.join(bad) or 'every notebook has its Colab badge and setup cell')
    sys.exit(1 if bad else 0)

if __name__ == '__main__': main()
