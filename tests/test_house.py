"""The house rules a newcomer relies on, measured on the notebooks and the package as committed (`tools/house.py`):
small exported cells each followed by something that shows them working, docments on every public symbol and
a docs entry for every class member, no module reaching into another's underscore names, an import graph that
only points back along the data flow, a trainer module of one job, and a picture before the reference on every
page about a stage of the method."""
import sys
from pathlib import Path
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]/'tools'))
import house

METHOD_PAGES = ['02_quant.ipynb', '02a_checkpoint.ipynb', '03_snr.ipynb', '04_ranks.ipynb', '04a_handoff.ipynb', '05_grouping.ipynb', '06b_merge.ipynb', '07_train.ipynb']


@pytest.fixture(scope='module')
def stats(): return house.summary()


def test_cell_sizes(stats):
    assert stats['median_lines'] <= 10 and stats['p90_lines'] <= 25, (stats['median_lines'], stats['p90_lines'], stats['longest'])


def test_every_export_is_shown(stats):
    assert stats['shown_share'] >= 0.85, (stats['shown_share'], stats['not_shown'])


def test_docments_and_docs_pages(stats):
    assert not stats['missing_docments'], stats['missing_docments']
    assert not stats['not_on_page'], stats['not_on_page']


def test_modules_keep_to_their_own(stats):
    assert not stats['private_imports'], stats['private_imports']
    assert not stats['backward_imports'], stats['backward_imports']
    assert stats['train_lines'] <= 350, stats['train_lines']
    assert {'config', 'data'} <= {p.stem for p in house.PKG.glob('*.py')}


def test_one_room_per_job():
    "Checkpoint and adapter files are read in `checkpoint` alone; the memory estimate is a leaf that only the run and the CLI import"
    assert (house.PKG/'checkpoint.py').exists()
    readers = ('safe_open', 'index.json', 'load_file(', 'frombuffer', 'def read_header', 'def read_adapter')
    for m in ('stream', 'snr', 'cli'):
        src = (house.PKG/f'{m}.py').read_text()
        assert not [r for r in readers if r in src], (m, [r for r in readers if r in src])
    users = sorted(p.stem for p in house.PKG.glob('*.py') if p.stem != 'estimate' and 'estimate' in house.sibling_imports(p.read_text()))
    assert users == ['cli', 'train'], users
    for name, home in [('plan_for', 'ranks'), ('export_peft', 'ranks'), ('shape_scan', 'snr'), ('meta_model', 'models'),
                       ('write_quant_settings', 'quant'), ('random_checkpoint', 'checkpoint'), ('plan_axolotl', 'handoff')]:
        defs = [p.stem for p in house.PKG.glob('*.py') if f'def {name}(' in p.read_text()]
        assert defs == [home], (name, defs)


@pytest.mark.parametrize('page', METHOD_PAGES)
def test_picture_first(page):
    assert house.picture_before_reference(house.NBS/page), f'{page}: no picture before its first exported definition'


def test_sidebar_lists_every_page_once():
    "The hand-written sidebar (custom_sidebar) names every notebook once, and its method section follows the data flow"
    import build_docs
    listed = [p for _, p in build_docs.sidebar_order(house.NBS)]
    every = sorted(str(p.relative_to(house.NBS)) for p in house.NBS.rglob('*.ipynb')
                   if not any(part.startswith(('_', '.')) for part in p.relative_to(house.NBS).parts))
    assert sorted(listed) == every and len(set(listed)) == len(listed), set(every) ^ set(listed)
    method = [p for s, p in build_docs.sidebar_order(house.NBS) if s == 'method']
    assert method == sorted(method) and method[0].startswith('01a_config'), method


def test_output_rules_are_enforced(tmp_path):
    "Each rule catches what it is for: a big output, a progress bar, a temporary path, an image over 2 MP"
    import base64, io, json
    from PIL import Image
    b = io.BytesIO(); Image.new('RGB', (2000, 1100)).save(b, 'png')
    outs = [dict(output_type='stream', name='stdout', text='x' * 60_000),
            dict(output_type='stream', name='stderr', text='Loading: 100%|##########| 3/3 [00:01<00:00,  2.1it/s]\n'),
            dict(output_type='stream', name='stdout', text='run directory: /tmp/tmpa1b2c3d4/run\n'),
            dict(output_type='display_data', metadata={}, data={'image/png': base64.b64encode(b.getvalue()).decode()}),
            dict(output_type='display_data', metadata={}, data={'application/vnd.jupyter.widget-view+json': {}, 'text/plain': 'merge:  40%|####      | 4/10 [00:01<00:02,  2.9tensor/s]'}),
            dict(output_type='execute_result', metadata={}, data={'application/vnd.jupyter.widget-view+json': {}, 'text/plain': 'VBox(children=(HBox(...),))'})]
    nb = tmp_path/'x.ipynb'
    nb.write_text(json.dumps(dict(cells=[dict(cell_type='code', source='', metadata={}, outputs=[o]) for o in outs])))
    import unittest.mock as m
    with m.patch.object(house, 'NBS', tmp_path): found = house.output_problems(nb)
    assert [f.split(': ', 1)[1].split(' (')[0] for f in found] == ['an output of 60 KB', 'a progress-bar stream', 'a temporary path', 'an image of 2.2 MP', 'a progress-bar widget'], found  # a widget that is not a bar is fine


def test_saved_outputs_keep_the_rules():
    "Every notebook of the site: no output over 50 KB, no progress bars, no image over 2 MP, no temporary paths"
    found = [p for nb in house.all_notebooks() for p in house.output_problems(nb)]
    assert not found, "re-run the notebooks with `make notebooks` (progress off, figures compacted):\n" + '\n'.join(found)


def test_compact_png():
    "A plot-like PNG comes back as a smaller 256-colour PNG of the same size; a palette PNG comes back as it was"
    import base64, io
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from PIL import Image
    fig, ax = plt.subplots(); ax.imshow([[i * j for i in range(30)] for j in range(30)]); b = io.BytesIO(); fig.savefig(b, format='png'); plt.close(fig)
    old = base64.b64encode(b.getvalue()).decode()
    new = house.compact_png(old)
    a, c = (Image.open(io.BytesIO(base64.b64decode(x))) for x in (old, new))
    assert len(new) < len(old) and c.mode == 'P' and a.size == c.size
    assert house.compact_png(new) == new
