"""Measure how the module notebooks read, against the house style (`STYLE.md`).

For every module notebook (`nbs/NN*_*.ipynb` with a `default_exp`):
- the size of each exported cell, in lines, directive lines (`#| ...`) and blank lines excluded; the cell holding only
  imports is left out (it is one per notebook by design);
- whether an exported cell is followed, before the next exported cell, by a code cell that tests or shows it (any
  code cell that is not only imports, `show_doc` calls or the closing `nbdev_export`);
- where the first picture (a PNG output) is, against the first `show_doc`-documented reference section.
And for the package: which public symbols (`__all__`, their public methods and properties) lack docments, and
which modules import another module's underscore names. For every notebook under `nbs/` (tutorials and benchmark
pages included), its saved outputs: none over 50 KB, no progress-bar streams (progress is off at the source in test
runs: `TQDM_DISABLE=1`, set by `conftest.py` and `make notebooks`), no image over 2 megapixels, no temporary paths.

Usage: `python tools/house.py` prints the figures; `tests/test_house.py` holds the project to them.
`python tools/house.py --compact NB...` re-encodes the PNG figures saved in notebooks as 256-colour PNGs (a third of
the bytes, the same picture to the eye); `make notebooks` runs it after saving the outputs.
"""
from __future__ import annotations
import ast, importlib, inspect, json, re, statistics, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS, PKG = ROOT/'nbs', ROOT/'qspec'
DIRECTIVE = re.compile(r'^\s*#\s*\|')
EXPORT = re.compile(r'^\s*#\s*\|\s*export', re.M)


def _src(c) -> str: return ''.join(c['source']) if isinstance(c['source'], list) else c['source']


def module_notebooks() -> list[Path]:
    "The notebooks that export a module, in order"
    return sorted(p for p in NBS.glob('[0-9]*.ipynb') if '#| default_exp' in p.read_text())


def _body(src: str) -> list[str]:
    return [l for l in src.splitlines() if l.strip() and not DIRECTIVE.match(l)]


def _only(src: str, pattern: str) -> bool:
    "Every statement of `src` matches `pattern` (imports, show_doc calls, ...)"
    try: tree = ast.parse('\n'.join(l for l in src.splitlines() if not DIRECTIVE.match(l)))
    except SyntaxError: return False
    return all(re.match(pattern, ast.unparse(s)) for s in tree.body)


def is_import_cell(src: str) -> bool: return _only(src, r'^(import |from \S+ import )')
def is_doc_cell(src: str) -> bool: return _only(src, r'^(show_doc\(|import nbdev|nbdev\.nbdev_export\(|from \S+ import |import )')


def cells_report(nb: Path) -> list[dict]:
    "One row per exported cell: its size and whether a test or example follows it"
    cells = json.loads(nb.read_text())['cells']
    rows = []
    for i, c in enumerate(cells):
        src = _src(c)
        if c['cell_type'] != 'code' or not EXPORT.search(src) or is_import_cell(src): continue
        shown = False
        for d in cells[i + 1:]:
            s = _src(d)
            if d['cell_type'] != 'code': continue
            if EXPORT.search(s): break
            if s.strip() and not is_doc_cell(s) and '#| eval: false' not in s: shown = True; break
        rows.append(dict(notebook=nb.name, cell=i, lines=len(_body(src)), shown=shown, first=_body(src)[0][:70]))
    return rows


def picture_before_reference(nb: Path) -> bool:
    "Whether the notebook shows a PNG before its first exported definition"
    for c in json.loads(nb.read_text())['cells']:
        if c['cell_type'] != 'code': continue
        if any('image/png' in o.get('data', {}) for o in c.get('outputs', [])): return True
        src = _src(c)
        if EXPORT.search(src) and not is_import_cell(src): return False
    return False


def _documented(f, skip_self: bool) -> list[str]:
    "Parameters (and the return) of `f` that have no docment"
    from fastcore.docments import docments
    try: d = docments(f, full=True)
    except (TypeError, OSError, ValueError): return ['(source not found)']
    sig = inspect.signature(f)
    miss = [n for n, p in sig.parameters.items() if not (skip_self and n in ('self', 'cls')) and
            p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and not (d.get(n) or {}).get('docment')]
    ret = sig.return_annotation
    if ret not in (inspect.Signature.empty, None, 'None') and not (d.get('return') or {}).get('docment'): miss.append('return')
    if not inspect.getdoc(f): miss.append('docstring')
    return miss


def _own_members(cls) -> dict:
    "Public methods and properties a qspec class defines itself (inherited ones are documented upstream)"
    return {n: v for n, v in vars(cls).items() if not n.startswith('_') and (inspect.isfunction(v) or isinstance(v, property))}


def docments_report() -> list[str]:
    "Public symbols with missing docments, as 'module.name: what is missing'"
    sys.path.insert(0, str(ROOT))
    out = []
    for p in sorted(PKG.glob('[a-z]*.py')):
        mod = importlib.import_module(f'qspec.{p.stem}')
        for name in getattr(mod, '__all__', []):
            obj = getattr(mod, name)
            if inspect.isfunction(obj):
                if m := _documented(obj, False): out.append(f'{p.stem}.{name}: {", ".join(m)}')
            elif inspect.isclass(obj) and obj.__module__ == mod.__name__:
                if not inspect.getdoc(obj): out.append(f'{p.stem}.{name}: docstring')
                if '__init__' in vars(obj) and not getattr(obj, '__dataclass_fields__', None):
                    if m := _documented(obj.__init__, True): out.append(f'{p.stem}.{name}.__init__: {", ".join(m)}')
                if getattr(obj, '__dataclass_fields__', None):
                    from fastcore.docments import docments
                    d = docments(obj)
                    if m := [f for f in obj.__dataclass_fields__ if not d.get(f)]: out.append(f'{p.stem}.{name} fields: {", ".join(m)}')
                for n, v in _own_members(obj).items():
                    f = v.fget if isinstance(v, property) else v
                    if m := _documented(f, True): out.append(f'{p.stem}.{name}.{n}: {", ".join(m)}')
    return out


def on_docs_page() -> list[str]:
    "Public class members that no `show_doc` puts on a page (nbdev documents top-level and `@patch` definitions itself)"
    out = []
    for nb in module_notebooks():
        text = '\n'.join(_src(c) for c in json.loads(nb.read_text())['cells'])
        mod_name = _module_name(nb)
        mod = importlib.import_module(f'qspec.{mod_name}')
        for name in getattr(mod, '__all__', []):
            obj = getattr(mod, name)
            if not inspect.isclass(obj) or obj.__module__ != mod.__name__: continue
            for n, v in _own_members(obj).items():
                patched = re.search(rf'@patch[^\n]*\n(@\w+[^\n]*\n)*def {re.escape(n)}\(\s*self:\s*{name}\b', text)
                if not patched and f'show_doc({name}.{n}' not in text: out.append(f'{mod_name}.{name}.{n}')
    return out


def private_imports() -> list[str]:
    "Imports of another qspec module's underscore names"
    out = []
    for p in sorted(PKG.glob('[a-z]*.py')):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or '').startswith('qspec')):
                out += [f'{p.name}: {node.module}.{a.name}' for a in node.names if a.name.startswith('_') and a.name != '__version__']
    return out


def _module_name(nb: Path) -> str: return re.search(r'#\| default_exp (\w+)', nb.read_text())[1]


def sibling_imports(src: str) -> set[str]:
    "The qspec modules a module's source imports, at the top or inside functions"
    out = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Import): out |= {a.name.split('.')[1] for a in node.names if a.name.startswith('qspec.')}
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ''
            if node.level or mod == 'qspec': out |= {a.name for a in node.names} if not mod or mod == 'qspec' else {mod.split('.')[0]}
            elif mod.startswith('qspec.'): out.add(mod.split('.')[1])
    return out


def backward_imports() -> list[str]:
    "Imports of a qspec module that comes at or after the importer in the notebooks' order (the graph must be acyclic and forward)"
    order = {_module_name(nb): i for i, nb in enumerate(module_notebooks())}
    return sorted(f'{m} imports {d}' for m, i in order.items() for d in sibling_imports((PKG/f'{m}.py').read_text())
                  if d in order and d != m and order[d] >= i)


MAX_OUTPUT, MAX_PIXELS = 50_000, 2_000_000
_BAR = re.compile(r'\r|\d+%\|[^|\n]*\||\[\d+:\d+<|it/s\]|s/it\]')  # tqdm's carriage returns, bars and rates
_TMP = re.compile(r'/tmp/|/var/folders/|\\Temp\\|tmp[a-z0-9_]{6,}')  # tempfile's directories and names


def _png_pixels(b64: str) -> int:
    "Width times height of a base64 PNG, from its header"
    import base64
    head = base64.b64decode(b64[:64])
    return int.from_bytes(head[16:20], 'big') * int.from_bytes(head[20:24], 'big')


def output_problems(nb: Path) -> list[str]:
    "What breaks the output rules in a notebook's saved outputs: size, progress bars, large images, temporary paths"
    out = []
    for i, c in enumerate(json.loads(nb.read_text())['cells']):
        for o in c.get('outputs', []):
            size, where = len(json.dumps(o)), f'{nb.resolve().relative_to(NBS)}[{i}]'
            if size > MAX_OUTPUT: out.append(f'{where}: an output of {size / 1000:.0f} KB')
            texts = [o.get('text', '')] + [v for k, v in o.get('data', {}).items() if k.startswith('text/')]
            text = ''.join(''.join(t) if isinstance(t, list) else t for t in texts)
            if o.get('output_type') == 'stream' and _BAR.search(text): out.append(f'{where}: a progress-bar stream')
            if 'application/vnd.jupyter.widget-view+json' in o.get('data', {}) and _BAR.search(text): out.append(f'{where}: a progress-bar widget')
            if _TMP.search(text): out.append(f'{where}: a temporary path ({_TMP.search(text)[0]})')
            if (png := o.get('data', {}).get('image/png')) and (px := _png_pixels(''.join(png))) > MAX_PIXELS: out.append(f'{where}: an image of {px / 1e6:.1f} MP')
    return out


def compact_png(b64: str) -> str:
    "A base64 PNG as a 256-colour PNG, or as it was when that is not smaller"
    import base64, io
    from PIL import Image
    im = Image.open(io.BytesIO(base64.b64decode(b64)))
    if im.mode == 'P': return b64
    alpha, out = 'A' in im.getbands(), io.BytesIO()
    q = Image.Quantize.FASTOCTREE if alpha else Image.Quantize.MEDIANCUT  # Pillow's median cut takes RGB only
    im.convert('RGBA' if alpha else 'RGB').quantize(256, method=q).save(out, 'png', optimize=True)
    new = base64.b64encode(out.getvalue()).decode()
    return new if len(new) < len(b64) else b64


def compact(nb: Path) -> int:
    "Re-encode the PNG outputs of `nb` with `compact_png`; the bytes saved"
    d, saved = json.loads(nb.read_text()), 0
    for c in d['cells']:
        for o in c.get('outputs', []):
            if png := o.get('data', {}).get('image/png'):
                old = ''.join(png); new = compact_png(old)
                if new != old: o['data']['image/png'] = new; saved += len(old) - len(new)
    if saved: nb.write_text(json.dumps(d, indent=1, ensure_ascii=False) + '\n')
    return saved


def all_notebooks() -> list[Path]:
    "Every notebook of the docs site"
    return sorted(p for p in NBS.rglob('*.ipynb') if not any(part.startswith(('_', '.')) for part in p.relative_to(NBS).parts))


def summary() -> dict:
    "All the figures at once"
    rows = [r for nb in module_notebooks() for r in cells_report(nb)]
    lines = sorted(r['lines'] for r in rows)
    return dict(exported_cells=len(rows), median_lines=statistics.median(lines),
                p90_lines=lines[min(len(lines) - 1, int(0.9 * len(lines)))],
                shown_share=sum(r['shown'] for r in rows) / len(rows),
                not_shown=[f"{r['notebook']}[{r['cell']}] {r['first']}" for r in rows if not r['shown']],
                longest=[f"{r['notebook']}[{r['cell']}] {r['lines']} lines: {r['first']}" for r in sorted(rows, key=lambda r: -r['lines'])[:10]],
                no_picture_first=[nb.name for nb in module_notebooks() if not picture_before_reference(nb)],
                missing_docments=docments_report(), not_on_page=on_docs_page(), private_imports=private_imports(),
                backward_imports=backward_imports(),
                train_lines=len((PKG/'train.py').read_text().splitlines()),
                output_problems=[p for nb in all_notebooks() for p in output_problems(nb)])


if __name__ == '__main__':
    if sys.argv[1:2] == ['--compact']:
        for nb in map(Path, sys.argv[2:] or all_notebooks()): print(f'{nb}: {compact(nb) / 1000:.0f} KB saved')
        sys.exit()
    s = summary()
    for k, v in s.items():
        if isinstance(v, list): print(f'{k} ({len(v)}):', *v, sep='\n  ')
        else: print(f'{k}: {v:.3f}' if isinstance(v, float) else f'{k}: {v}')
