"""Check the documentation site as far as it can be built without Quarto, and the course's reader-mode rules.

Runs what `nbdev_docs` runs before it hands the notebooks to Quarto (refresh nbdev.yml, build the doclinks
index, process every notebook with nbdev's processors, into a temporary folder), then fails when
- a notebook is missing from nbs/sidebar.yml, or the sidebar names a notebook that does not exist;
- an exported function or class has no API entry (a `show_doc` heading) in its processed notebook;
- a committed notebook holds an error output, or a warning printed to stderr;
- a cell that draws a figure has no image output (cells marked `#| eval: false` excepted);
- a notebook lacks a title or a description;
- an exported function or class has its API entry outside the section (`## ...`) of the cell that defines it,
  or before that cell (an end-of-chapter `show_doc` list does this);
- an API entry shows a docstring inherited from torch ("Define the computation performed at every call", ...);
- an API entry appears twice in a page (a `show_doc` of a `@patch` method, which nbdev documents by itself);
- an exported constant (a name in `__all__` that is not a function or class) is not explained right where it is
  defined: the markdown cell just before its defining cell, or the one just after it, must name it in backticks
  (say what it holds and who uses it), or the constant should be private (`_NAME`, out of `__all__`);
- an exported function documents `**kwargs` with a trailing comment (renderers drop it or show it as the
  return value: say it in the docstring);
- nbdev's doclinks made a link to a private name (`page.html#_name`), which has no API entry to land on: write
  such a name with its arguments, `_name(a, b)`, or without backticks;
- pandoc (from `pypandoc-binary`, when installed) warns while reading a page, or an API signature still shows a
  raw Markdown link or a `NoneType` annotation after nbs/signatures.lua (the filter _quarto.yml gives Quarto);
- the reader-mode rules of the course are broken (these need nothing but the notebooks):
  * a code cell in nbs/ is longer than 60 lines (split it: one idea per cell);
  * a notebook cell writes into the package's data folder (`ASSETS`, `diffnb/assets`): a notebook never
    changes the installed package; retraining a shipped file is a maintainer's script in tools/.

    python tools/check_docs.py
    python tools/check_docs.py --reader-mode    # only the reader-mode rules (fast: no nbdev processing)
"""
import importlib, inspect, json, re, sys, os, warnings
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
    pat = re.compile(rf'^(?:class|def)\s+{re.escape(name)}\b|^{re.escape(name)}\s*(?::[^=\n]*)?=', re.M)
    for i, c in enumerate(cells):
        if c['cell_type'] == 'code' and re.search(r'^#\|\s*export', src(c), re.M) and pat.search(src(c)): return i
    return None

def _prose_around(cells, i):
    "The markdown cells just before and just after cell i (all the prose when i is None)"
    if i is None: return '\n'.join(src(c) for c in cells if c['cell_type'] == 'markdown')
    before = next((src(c) for c in reversed(cells[:i]) if c['cell_type'] == 'markdown'), '')
    after = next((src(c) for c in cells[i + 1:] if c['cell_type'] == 'markdown'), '')
    return before + '\n' + after

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
        entries = [h for c in cells for o in c.get('outputs', []) for md in [''.join(o.get('data', {}).get('text/markdown', ''))]
                   if '[source](' in md for h in re.findall(r'^#+\s+(\S+)\s*$', md, re.M)]
        for h in sorted({h for h in entries if entries.count(h) > 1}):
            problem(f'{nbname}: the API entry of `{h}` appears {entries.count(h)} times (nbdev adds the entry of a @patch method '
                    f'by itself: drop its show_doc)')
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
        srccells = json.loads((NBS/nbname).read_text(encoding='utf-8'))['cells']
        for n in getattr(mod, '__all__', []):
            o = getattr(mod, n)
            if inspect.isfunction(o) or inspect.isclass(o) or inspect.ismodule(o): continue
            near = _prose_around(srccells, _defining_cell(srccells, n))
            if f'`{n}`' not in near:
                problem(f'{nbname}: the exported constant `{n}` is not explained right where it is defined (name it in backticks '
                        f'in the markdown cell just before or just after its defining cell: what it holds, who uses it), or make it private')
        for m in re.finditer(r'\]\(([\w.-]*\.html)?#(_\w+)\)', text):
            problem(f'{nbname}: a link to the private name `{m.group(2)}` ({m.group(0)[2:-1]}) has no API entry to land on; '
                    f'write it with its arguments, `{m.group(2)}(...)`, or without backticks')

def check_pages(proc):
    """Read each processed page with pandoc, with the Lua filter _quarto.yml gives Quarto, and report pandoc's
    warnings and any API signature that still shows a raw Markdown link or a `NoneType` annotation"""
    try: import pypandoc
    except ImportError: print('docs check: pypandoc not installed, pages not read with pandoc'); return
    import subprocess, yaml
    filters = yaml.safe_load((NBS/'_quarto.yml').read_text()).get('filters') or []
    args = [a for f in filters for a in ('--lua-filter', str(NBS/f))]
    for p in sorted(Path(proc).glob('*.ipynb')):
        nb = json.loads(p.read_text(encoding='utf-8'))
        md = '\n\n'.join(src(c) for c in nb['cells'] if c['cell_type'] == 'markdown')
        md += '\n\n' + '\n\n'.join(''.join(o.get('data', {}).get('text/markdown', '')) for c in nb['cells'] for o in c.get('outputs', []))
        r = subprocess.run([pypandoc.get_pandoc_path(), '-f', 'markdown', '-t', 'json', *args], input=md, capture_output=True, text=True)
        warns = [l for l in r.stderr.splitlines() if 'WARNING' in l]
        if r.returncode: problem(f'{p.name}: pandoc failed: {r.stderr.strip()[:200]}'); continue
        if warns: problem(f'{p.name}: pandoc warns {len(warns)} times reading the page, e.g. {warns[0][:150]}')
        sigs = [b['c'][1] for b in _blocks(json.loads(r.stdout)['blocks']) if b.get('t') == 'CodeBlock'
                and re.match(r'(async )?def ', b['c'][1])]
        raw = [m.group(0) for t in sigs for m in re.finditer(r'\[`[^`]+`\]\([^)]*\)|\w+:NoneType=', t)]
        if raw: problem(f'{p.name}: {len(raw)} API signature part(s) show raw Markdown or NoneType, e.g. {raw[0]!r}')

def _blocks(blocks):
    "Every block of a pandoc JSON document, nested ones included"
    for b in blocks:
        yield b
        c = b.get('c')
        if isinstance(c, list):
            for x in c:
                if isinstance(x, list) and x and isinstance(x[0], dict) and 't' in x[0]: yield from _blocks(x)
                elif isinstance(x, list):
                    for y in x:
                        if isinstance(y, list) and y and isinstance(y[0], dict) and 't' in y[0]: yield from _blocks(y)

MAX_CELL_LINES = 60
_WRITES = re.compile(r'\b(?:torch\.save|np\.savez\w*|atomic_write|save\w*|export\w*|write\w*|shutil\.(?:copy|move)\w*|'
                     r'copy(?:file)?|rename|unlink|rmtree|mkdir)\s*\(|\bopen\([^)]*[\'"][wax]b?\+?[\'"]|--out\b|--ckpt\b')
_ASSETS = re.compile(r'\bASSETS\b|diffnb/assets|[\'"]assets[\'"]')

def _writes_assets(code):
    """Lines of `code` that write into the package's data folder (a static guess: a write on a line that names the
    folder, or, outside exported cells, that names a variable assigned from it)"""
    lines = [l.split('#', 1)[0] if not l.lstrip().startswith('#|') else '' for l in code.splitlines()]
    exported = re.search(r'^#\|\s*export', code, re.M)
    names = set() if exported else {m.group(1) for l in lines if _ASSETS.search(l) for m in [re.match(r'\s*(\w+)\s*=', l)] if m}
    near = re.compile('|'.join([_ASSETS.pattern] + [rf'\b{re.escape(n)}\b' for n in names]))
    return [l.strip() for l in lines if _WRITES.search(l) and near.search(l)]

def check_reader_mode():
    "The course's reader-mode rules: short code cells, and no cell that writes into the package's data folder"
    for p in notebooks():
        for i, c in enumerate(json.loads(p.read_text(encoding='utf-8'))['cells']):
            if c['cell_type'] != 'code': continue
            s = src(c)
            n = len(s.rstrip().splitlines())
            if n > MAX_CELL_LINES:
                problem(f'{p.name} cell {i}: a code cell of {n} lines (at most {MAX_CELL_LINES}: split it, one idea per cell)')
            for l in _writes_assets(s):
                problem(f'{p.name} cell {i}: writes into the package\'s data folder ({l[:90]!r}); a notebook never changes the '
                        f'installed package -- write under runs/ or a temporary folder, and leave retraining a shipped file to a script in tools/')

def check_colab():
    "Every notebook opens in Colab from its badge, and its setup cell installs the course there (tools/colab.py)"
    sys.path.insert(0, str(ROOT/'tools'))
    import colab
    for p in notebooks():
        lack = colab.missing(json.loads(p.read_text(encoding='utf-8')), p.name)
        if lack: problem(f'{p.name}: no up-to-date Colab {" and ".join(lack)} (run python tools/colab.py)')

def process_notebooks():
    """What `proc_nbs(force=True)` does, one notebook at a time, so that a notebook nbdev cannot process (nbdev_docs
    would stop there) is reported by name and the others are still checked"""
    import tempfile, nbdev.serve_drv
    from nbdev.serve import _proc_file
    from nbdev.doclinks import nbglob
    cache = Path(tempfile.mkdtemp(prefix='diffnb-docs-check-'))   # private: several checks (or a render) can run at once
    files = nbglob(NBS, func=Path, file_glob='', file_re='') + [NBS/'_quarto.yml']
    for f in files:
        job = _proc_file(Path(f), cache=cache, path=NBS)
        if job is None: continue
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter('always')
                nbdev.serve_drv.main(job)
            for w in caught:
                if 'nbdev' not in str(w.filename): continue
                msg = str(w.message).split('\n---\n')
                cell = f' (the cell that starts {msg[1].strip().splitlines()[0][:80]!r})' if len(msg) > 1 and msg[1].strip() else ''
                problem(f'{Path(f).name}: nbdev warns: {msg[0].strip()[:120]}{cell}')
        except Exception as e:
            os.environ.pop('IN_TEST', None)
            why = str(e.__cause__ or e).strip().splitlines()
            problem(f'{Path(f).name}: nbdev_docs fails on it: {(str(e).splitlines() or [""])[0][:120]} ({why[-1][:120] if why else type(e).__name__})')
    return cache

def main():
    os.chdir(ROOT)
    check_reader_mode()
    check_colab()
    if '--reader-mode' in sys.argv: return report(len(notebooks()), 'reader-mode rules kept')
    from nbdev.quarto import refresh_quarto_yml
    import nbdev.doclinks
    refresh_quarto_yml()
    nbdev.doclinks._build_modidx()
    check_sidebar()
    for p in notebooks(): check_committed(p)
    proc = process_notebooks()
    try:
        check_api(proc)
        check_pages(proc)
    finally:
        import shutil; shutil.rmtree(proc, ignore_errors=True)
    report(len(notebooks()), 'processed, sidebar complete, every exported name has an API entry, reader-mode rules kept, no errors')

def report(n, ok):
    if problems:
        print(f'docs check: {len(problems)} problem(s) in {n} notebooks', *problems, sep='\n  ')
        sys.exit(1)
    print(f'docs check: {n} notebooks {ok}')

if __name__ == '__main__': main()
