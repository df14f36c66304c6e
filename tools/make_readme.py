"""Make README.md from nbs/index.ipynb, as `nbdev_readme` does, without needing Quarto.

    python tools/make_readme.py          # write README.md (and the figures it shows)
    python tools/make_readme.py --check  # fail if README.md is not what index.ipynb makes

Markdown cells are copied, code cells become fenced Python, text outputs fenced text, and figures are
written to index_files/figure-commonmark/ (the place nbdev_readme uses). Cells marked `#| hide` are left
out, and `#|` directive lines are dropped. Links to a chapter (`09_evaluation.ipynb#...`), which the docs site
resolves next to index.ipynb, point into nbs/ in the README, where GitHub finds the notebooks.

This script is the only maker of README.md. `nbdev_docs` (and `nbdev_readme`) would render their own README with
Quarto, different from this one; nbs/_quarto.yml runs this script as Quarto's post-render step instead:

    python ../tools/make_readme.py --quarto-post-render   # run by Quarto in the project folder (nbs/ or _proc/)

When that render made a README (it is among the rendered files), the script removes it and writes this one in
its place, so `nbdev_docs` leaves README.md exactly as `python tools/make_readme.py` makes it.
"""
import base64, json, os, re, shutil, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NB, README, FIGS = ROOT/'nbs'/'index.ipynb', ROOT/'README.md', Path('index_files')/'figure-commonmark'

def _src(cell): return ''.join(cell['source']) if isinstance(cell['source'], list) else cell['source']
def _text(v): return ''.join(v) if isinstance(v, list) else v

_CHAPTER_LINK = re.compile(r'\]\((?![a-z]+:|#|/)([^)\s]+\.ipynb(?:#[^)\s]*)?)\)')

def _for_github(md):
    "Markdown with links to chapters pointing into nbs/, where the notebooks are in the repository"
    return _CHAPTER_LINK.sub(lambda m: f'](nbs/{m.group(1)})', md)

def render(nb):
    "README text and {relative path: png bytes} for the notebook `nb`"
    parts, figs = [], {}
    for i, cell in enumerate(nb['cells']):
        src = _src(cell)
        lines = src.splitlines()
        directives = [l.replace(' ', '') for l in lines if l.startswith('#|')]
        if '#|hide' in directives or '#|include:false' in directives: continue
        body = '\n'.join(l for l in lines if not l.startswith('#|')).strip()
        if cell['cell_type'] == 'markdown':
            parts.append(_for_github(body)); continue
        if cell['cell_type'] != 'code': continue
        if body and '#|echo:false' not in directives: parts.append(f'```python\n{body}\n```')
        for j, out in enumerate(cell.get('outputs', [])):
            data = out.get('data', {})
            if out.get('output_type') == 'stream' and out.get('name') == 'stdout':
                parts.append(f'```\n{_text(out["text"]).rstrip()}\n```')
            elif 'image/png' in data:
                rel = FIGS/f'cell-{i}-output-{j + 1}.png'
                figs[rel.as_posix()] = base64.b64decode(_text(data['image/png']))
                parts.append(f'![]({rel.as_posix()})')
            elif 'text/markdown' in data:
                parts.append(_for_github(_text(data['text/markdown']).strip()))
            elif 'text/plain' in data:
                parts.append(f'```\n{_text(data["text/plain"]).rstrip()}\n```')
    footer = '<!-- This file is made from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file. -->'
    return '\n\n'.join([p for p in parts if p] + [footer]) + '\n', figs

def main(check=False):
    text, figs = render(json.loads(NB.read_text(encoding='utf-8')))
    if check:
        stale = [p for p, b in figs.items() if not (ROOT/p).exists() or (ROOT/p).read_bytes() != b]
        if not README.exists() or README.read_text(encoding='utf-8') != text or stale:
            sys.exit('README.md is out of step with nbs/index.ipynb: run `python tools/make_readme.py` and commit the result')
        print('README.md is in step with nbs/index.ipynb')
        return
    for old in (ROOT/FIGS).glob('*.png'): old.unlink()
    for p, b in figs.items():
        (ROOT/p).parent.mkdir(parents=True, exist_ok=True)
        (ROOT/p).write_bytes(b)
    README.write_text(text, encoding='utf-8')
    print(f'wrote README.md and {len(figs)} figure(s)')

def quarto_post_render():
    "Replace a README that Quarto just rendered (for `nbdev_readme`) with this script's; do nothing otherwise"
    listed = os.environ.get('QUARTO_PROJECT_OUTPUT_FILES', '')
    if os.environ.get('QUARTO_USE_FILE_FOR_PROJECT_OUTPUT_FILES'):
        listed = Path(os.environ['QUARTO_USE_FILE_FOR_PROJECT_OUTPUT_FILES']).read_text(encoding='utf-8')
    made = [Path(f) for f in listed.splitlines() if Path(f).name == 'README.md']
    if not made: return
    for f in made:
        f.unlink(missing_ok=True)
        shutil.rmtree(f.parent/'index_files'/'figure-commonmark', ignore_errors=True)
        shutil.rmtree(f.parent/'index_files'/'figure-gfm', ignore_errors=True)
    main()

if __name__ == '__main__':
    if '--quarto-post-render' in sys.argv: quarto_post_render()
    else: main('--check' in sys.argv)
