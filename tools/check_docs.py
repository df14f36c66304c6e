"""Check the documentation site as far as it can be built without Quarto.

Runs what `nbdev_docs` runs before it hands the notebooks to Quarto (refresh nbdev.yml, build the doclinks
index, process every notebook with nbdev's processors into _proc/), then fails when
- a notebook is missing from nbs/sidebar.yml, or the sidebar names a notebook that does not exist;
- an exported function or class has no API entry (a `show_doc` heading) in its processed notebook;
- a committed notebook holds an error output, or a warning printed to stderr;
- a cell that draws a figure has no image output (cells marked `#| eval: false` excepted);
- a notebook lacks a title or a description;
- an exported function or class has its API entry outside the section (`## ...`) of the cell that defines it,
  or before that cell (an end-of-chapter `show_doc` list does this);
- an API entry shows a docstring inherited from torch ("Define the computation performed at every call", ...);
- an exported constant (a name in `__all__` that is not a function or class) is not explained in the prose of
  its notebook (in backticks in a markdown cell);
- an exported function documents `**kwargs` with a trailing comment (renderers drop it or show it as the
  return value: say it in the docstring);
- pandoc (from `pypandoc-binary`, when installed) warns while writing the CommonMark copy of a page that
  `_quarto.yml` asks for -- what Quarto's render would print.

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

INHERITED = ('Define the computation performed at every call', 'Call self as a function', 'Initialize self.  See help')

def _defining_cell(cells, name):
    "Index of the exported cell that defines `name` at top level"
    pat = re.compile(rf'^(?:class|def)\s+{re.escape(name)}\b|^{re.escape(name)}\s*=', re.M)
    for i, c in enumerate(cells):
        if c['cell_type'] == 'code' and re.search(r'^#\|\s*export', src(c), re.M) and pat.search(src(c)): return i
    return None

def _entry_cell(cells, name):
    "Index of the cell whose output is the API entry of `name`"
    for i, c in enumerate(cells):
        for o in c.get('outputs', []):
            if re.search(rf'^#+\s+{re.escape(name)}\s*$', ''.join(o.get('data', {}).get('text/markdown', '')), re.M): return i
    return None

def _section_end(cells, i):
    "Index of the next markdown cell after i that opens a `## ` section (or the end)"
    for j in range(i + 1, len(cells)):
        if cells[j]['cell_type'] == 'markdown' and re.match(r'##\s', src(cells[j]).lstrip()): return j
    return len(cells)

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
        cells, nbname = nb['cells'], m.group(1)
        for bad in INHERITED:
            if bad in text: problem(f'{nbname}: an API entry shows a docstring inherited from torch ("{bad}...")')
        for n in exported(mod):
            if not re.search(rf'^#+\s+{re.escape(n)}\s*$', text, re.M):
                problem(f'{nbname}: `{n}` has no API entry (show_doc) in the processed notebook'); continue
            d, e = _defining_cell(cells, n), _entry_cell(cells, n)
            if d is not None and e is not None and not d < e < _section_end(cells, d):
                problem(f'{nbname}: the API entry of `{n}` is not in the section that defines it (defined in cell {d}, entry in cell {e})')
            o = getattr(mod, n)
            try: source = inspect.getsource(o)
            except (TypeError, OSError): source = ''
            if re.search(r'^\s*\*\*\w+,?\s*#', source, re.M):
                problem(f'{nbname}: `{n}` documents **kwargs with a comment; say what they are in the docstring')
        prose = '\n'.join(src(c) for c in json.loads((NBS/nbname).read_text(encoding='utf-8'))['cells'] if c['cell_type'] == 'markdown')
        for n in getattr(mod, '__all__', []):
            o = getattr(mod, n)
            if inspect.isfunction(o) or inspect.isclass(o) or inspect.ismodule(o): continue
            if f'`{n}`' not in prose: problem(f'{nbname}: the exported constant `{n}` is not explained in the prose (mention it in backticks, or make it private)')

def check_commonmark(proc):
    "Convert each processed page to CommonMark the way _quarto.yml asks, and report pandoc's warnings"
    try: import pypandoc, yaml
    except ImportError: print('docs check: pypandoc not installed, CommonMark conversion not checked'); return
    fmt = (yaml.safe_load((NBS/'_quarto.yml').read_text()).get('format') or {}).get('commonmark')
    if fmt is None: return
    variant = fmt.get('variant', '') if isinstance(fmt, dict) else ''
    for p in sorted(Path(proc).glob('*.ipynb')):
        nb = json.loads(p.read_text(encoding='utf-8'))
        md = '\n\n'.join(src(c) for c in nb['cells'] if c['cell_type'] == 'markdown')
        md += '\n\n'.join(''.join(o.get('data', {}).get('text/markdown', '')) for c in nb['cells'] for o in c.get('outputs', []))
        import subprocess
        r = subprocess.run([pypandoc.get_pandoc_path(), '-f', 'markdown', '-t', 'commonmark' + variant, '-o', os.devnull],
                           input=md, capture_output=True, text=True)
        warns = [l for l in r.stderr.splitlines() if 'WARNING' in l]
        if warns: problem(f'{p.name}: pandoc warns {len(warns)} times writing CommonMark, e.g. {warns[0][:150]}')

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
    check_commonmark(Path(proc))
    n = len(notebooks())
    if problems:
        print(f'docs check: {len(problems)} problem(s) in {n} notebooks', *problems, sep='\n  ')
        sys.exit(1)
    print(f'docs check: {n} notebooks processed, sidebar complete, every exported name has an API entry, no errors')

if __name__ == '__main__': main()
