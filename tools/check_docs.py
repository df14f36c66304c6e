"""Check the documentation site as far as it can be built without Quarto.

Runs what `nbdev_docs` runs before it hands the notebooks to Quarto (refresh nbdev.yml, build the doclinks
index, process every notebook with nbdev's processors into _proc/), then fails when
- a notebook is missing from nbs/sidebar.yml, or the sidebar names a notebook that does not exist;
- an exported function or class has no API entry (a `show_doc` heading) in its processed notebook;
- a committed notebook holds an error output, or a warning printed to stderr;
- a cell that draws a figure has no image output (cells marked `#| eval: false` excepted);
- a notebook lacks a title or a description.

    python tools/check_docs.py
"""
import importlib, inspect, json, re, sys, os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
FIGURE_CALLS = re.compile(r'\b(show_images\(|plt\.\w+\(|\.scatter\(|\.plot\(|\.imshow\(|subplots\()')
problems = []
def problem(msg): problems.append(msg)

def src(cell): return ''.join(cell['source']) if isinstance(cell['source'], list) else cell['source']
def notebooks(): return sorted(p for p in NBS.glob('*.ipynb') if not p.name.startswith('_'))

def check_sidebar():
    import yaml
    side = yaml.safe_load((NBS/'sidebar.yml').read_text())
    listed = []
    def walk(items):
        for it in items:
            if isinstance(it, str): listed.append(it)
            elif isinstance(it, dict):
                if 'href' in it: listed.append(it['href'])
                walk(it.get('contents', []))
    walk(side['website']['sidebar']['contents'])
    names = {p.name for p in notebooks()}
    for n in sorted(names - set(listed)): problem(f'sidebar.yml: {n} is not in the sidebar')
    for n in sorted(set(listed) - names): problem(f'sidebar.yml: lists {n}, which does not exist')

def check_committed(nb_path):
    nb = json.loads(nb_path.read_text(encoding='utf-8'))
    first = next((src(c) for c in nb['cells'] if c['cell_type'] == 'markdown'), '')
    if not re.search(r'^# \S', first, re.M): problem(f'{nb_path.name}: the first markdown cell has no "# title"')
    if nb_path.name != 'index.ipynb' and not re.search(r'^> \S', first, re.M):
        problem(f'{nb_path.name}: the first markdown cell has no "> description"')
    for i, c in enumerate(nb['cells']):
        if c['cell_type'] != 'code': continue
        s, outs = src(c), c.get('outputs', [])
        for o in outs:
            if o.get('output_type') == 'error': problem(f'{nb_path.name} cell {i}: error output ({o.get("ename")})')
            if o.get('output_type') == 'stream' and o.get('name') == 'stderr' and re.search(r'warn|error|traceback', ''.join(o['text']), re.I):
                problem(f'{nb_path.name} cell {i}: a warning or error printed to stderr: {"".join(o["text"])[:120]!r}')
        draws = FIGURE_CALLS.search('\n'.join(l for l in s.splitlines() if not l.lstrip().startswith('#')))
        if draws and 'eval: false' not in s and '#| export' not in s and not s.lstrip().startswith('def ') \
           and not any('image/png' in o.get('data', {}) for o in outs):
            problem(f'{nb_path.name} cell {i}: draws a figure ({draws.group(0)}) but has no image output')

def exported(mod):
    "Functions and classes in a module's __all__ that are defined there"
    out = []
    for n in getattr(mod, '__all__', []):
        o = getattr(mod, n)
        if (inspect.isfunction(o) or inspect.isclass(o)) and getattr(o, '__module__', None) == mod.__name__: out.append(n)
    return out

def check_api(proc):
    for py in sorted((ROOT/'diffnb').glob('*.py')):
        if py.name.startswith('_'): continue
        m = re.search(r'File to edit: \.\./nbs/(\S+\.ipynb)', py.read_text(encoding='utf-8'))
        if not m: problem(f'{py.name}: not generated from a notebook'); continue
        pnb = proc/m.group(1)
        if not pnb.exists(): problem(f'{m.group(1)}: missing from the processed output'); continue
        nb = json.loads(pnb.read_text(encoding='utf-8'))
        text = '\n'.join(''.join(o.get('data', {}).get('text/markdown', '')) for c in nb['cells'] for o in c.get('outputs', []))
        text += '\n'.join(src(c) for c in nb['cells'] if c['cell_type'] == 'markdown')
        mod = importlib.import_module(f'diffnb.{py.stem}')
        for n in exported(mod):
            if not re.search(rf'^#+\s+{re.escape(n)}\s*$', text, re.M):
                problem(f'{m.group(1)}: `{n}` has no API entry (show_doc) in the processed notebook')

def main():
    os.chdir(ROOT)
    from nbdev.quarto import refresh_quarto_yml
    from nbdev.serve import proc_nbs
    import nbdev.doclinks
    refresh_quarto_yml()
    nbdev.doclinks._build_modidx()
    check_sidebar()
    for p in notebooks(): check_committed(p)
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        proc = proc_nbs(str(NBS), n_workers=0, force=True)
    for w in caught:
        if 'nbdev' in str(w.filename): problem(f'nbdev warned while processing: {str(w.message)[:200]}')
    check_api(Path(proc))
    n = len(notebooks())
    if problems:
        print(f'docs check: {len(problems)} problem(s) in {n} notebooks', *problems, sep='\n  ')
        sys.exit(1)
    print(f'docs check: {n} notebooks processed, sidebar complete, every exported name has an API entry, no errors')

if __name__ == '__main__': main()
