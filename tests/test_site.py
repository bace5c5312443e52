"""The docs site, opened in a real headless Chromium through a local HTTP server."""
import functools, http.server, re, shutil, subprocess, sys, threading
from pathlib import Path
import pytest
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT/'_site'
ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic', '--no-first-run',
        '--disable-component-update', '--disable-sync']


@pytest.fixture(scope='module')
def site():
    "The built site served on a free loopback port"
    if not (SITE/'index.html').exists(): subprocess.run([sys.executable, str(ROOT/'tools'/'build_docs.py'), '--no-readme'], check=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(SITE))
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{srv.server_address[1]}'
    srv.shutdown()


@pytest.fixture(scope='module')
def page(site):
    exe = shutil.which('chromium') or shutil.which('chromium-browser')
    assert exe, "Chromium is not installed: `make test` installs Debian's chromium package (apt-get install chromium)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=ARGS)
        pg = browser.new_page(viewport={'width': 1280, 'height': 900})
        pg.goto(site + '/index.html')
        yield pg
        browser.close()


def test_home_page(page):
    assert 'qspec' in page.title()
    body = page.inner_text('article')
    assert 'make demo' in body and 'make test' in body
    imgs = page.eval_on_selector_all('article img', 'els => els.map(e => e.complete && e.naturalWidth)')
    assert imgs and all(w and w > 100 for w in imgs), imgs


def test_navigate_to_api_page_with_plot(page, site):
    page.goto(site + '/index.html')
    page.get_by_role('link', name='NF4 quantization').first.click()
    page.wait_for_load_state('load')
    assert page.url.endswith('/quant.html'), page.url
    # the API reference: show_doc output for exported functions, with their docments
    assert page.locator('h3#load_nf4').count() == 1 and page.locator('h3#memory_report').count() == 1
    assert 'compute dtype' in page.inner_text('article')
    # the memory chart is an image that the browser decoded and laid out
    img = page.locator('article img').last
    img.scroll_into_view_if_needed()
    assert img.is_visible()
    w, h = img.evaluate('e => [e.naturalWidth, e.naturalHeight]')
    assert w > 300 and h > 150, (w, h)
    shot = SITE/'_check'/'quant.png'
    shot.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_snr_page_shows_heatmap(page, site):
    page.goto(site + '/snr.html')
    assert page.locator('h3#snranalyzer').count() == 1
    # the heatmap cell's output image: find the image right after the code calling res.heatmap()
    img = page.locator('div.jp-Cell:has(pre:text("res.heatmap()")) img').first
    img.scroll_into_view_if_needed()
    assert img.is_visible()
    w, h = img.evaluate('e => [e.naturalWidth, e.naturalHeight]')
    assert w > 300 and h > 300, (w, h)


def test_benchmark_section(page, site):
    page.goto(site + '/index.html')
    page.get_by_role('link', name='Benchmark: SNR scan').first.click()
    page.wait_for_load_state('load')
    assert page.url.endswith('/benchmarks/snr_scan.html')
    assert 'peak RSS' in page.inner_text('article')
    assert page.locator('article img').count() >= 1


def test_search(page, site):
    page.goto(site + '/index.html')
    box = page.locator('input[data-md-component="search-query"]')
    box.click()
    box.press_sequentially('dequantize', delay=30)
    page.wait_for_selector('.md-search-result__item', state='attached', timeout=15_000)
    assert 'quant.html' in page.locator('.md-search-result__item a').first.get_attribute('href')


def test_training_pages(page, site):
    "The trainer's and the loss's references, the streaming merge's, the configuration page with the YAML schema, and the executed tutorial with its plots"
    page.goto(site + '/train.html')
    assert page.locator('h3#run').count() == 1
    page.goto(site + '/loss.html')
    assert page.locator('h3#causal_loss').count() == 1
    page.goto(site + '/stream.html')
    assert page.locator('h3#merge_checkpoint').count() == 1
    page.goto(site + '/config.html')
    assert page.locator('h3#trainconfig').count() == 1
    body = page.inner_text('article')
    assert 'max_eval_examples' in body and 'validation examples evaluated' in body
    page.goto(site + '/tutorials/end_to_end.html')
    imgs = page.eval_on_selector_all('article img', 'els => els.map(e => e.complete && e.naturalWidth)')
    assert len(imgs) >= 5 and all(w and w > 100 for w in imgs), imgs


def test_deploy_pages(page, site):
    "The export references and the executed Deploy tutorial with its parity tables"
    for p, h in (('portable', 'write_portable'), ('llamacpp', 'gguf_served'), ('export', 'export')):
        page.goto(f'{site}/{p}.html')
        assert page.locator(f'h3#{h}').count() == 1, p
    page.goto(site + '/tutorials/deploy/deploy.html')
    body = page.inner_text('article')
    assert 'max abs Δlogit' in body and 'lora-gguf on f32 base' in body


PLOT_CALL = re.compile(r'plt\.show\(\)|test_fig_exists\(|\.heatmaps?\(|\.explorer\(|\.plot_\w+\(|\bplot_\w+\(|\.plot\(\)|\bImage\(')


def plot_cells_without_image(html: str) -> list[str]:
    "The code cells of a page whose shown source draws a figure but whose output holds no image"
    from bs4 import BeautifulSoup
    out = []
    for cell in BeautifulSoup(html, 'html.parser').select('div.jp-Cell.jp-CodeCell'):
        src = cell.select_one('.jp-InputArea')
        src = src.get_text() if src else ''
        if re.search(r'^\s*def ', src, re.M): continue  # a cell defining a helper draws nothing yet
        if PLOT_CALL.search(src) and 'save_png' not in src and not cell.select('.jp-OutputArea img'): out.append(src.strip()[:120])
    return out


def test_plot_cells_have_images(site):
    "Every cell of the site that draws a figure shows it"
    missing = {str(p.relative_to(SITE)): m for p in sorted(SITE.rglob('*.html')) if (m := plot_cells_without_image(p.read_text()))}
    assert not missing, missing


def test_plot_cell_rule():
    "The rule sees a drawing cell without its image, and accepts one with it"
    cell = '<div class="jp-Cell jp-CodeCell"><div class="jp-InputArea"><pre>run.snr.heatmap(25);</pre></div>{}</div>'
    assert plot_cells_without_image(cell.format('')) == ['run.snr.heatmap(25);']
    assert plot_cells_without_image(cell.format('<div class="jp-OutputArea"><img src="x.png"></div>')) == []
