"""Make README.md from nbs/index.ipynb, as `nbdev_readme` does, without needing Quarto.

    python tools/make_readme.py          # write README.md (and the figures it shows)
    python tools/make_readme.py --check  # fail if README.md is not what index.ipynb makes

Markdown cells are copied, code cells become fenced Python, text outputs fenced text, and figures are
written to index_files/figure-commonmark/ (the place nbdev_readme uses). Cells marked `#| hide` are left
out, and `#|` directive lines are dropped.
"""
import base64, json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NB, README, FIGS = ROOT/'nbs'/'index.ipynb', ROOT/'README.md', Path('index_files')/'figure-commonmark'

def _src(cell): return ''.join(cell['source']) if isinstance(cell['source'], list) else cell['source']
def _text(v): return ''.join(v) if isinstance(v, list) else v

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
            parts.append(body); continue
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
                parts.append(_text(data['text/markdown']).strip())
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

if __name__ == '__main__': main('--check' in sys.argv)
