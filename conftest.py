"""Collect every notebook under nbs/ as one pytest item, run by nbdev's own test runner (`nbdev.test.test_nb`)."""
import os
# Progress off at the source in test runs: tqdm (qspec's bars, transformers', datasets') and the hub's read these
# when they are first imported, so saved notebook outputs carry no progress-bar streams (`tools/house.py` checks).
os.environ.setdefault('TQDM_DISABLE', '1')
os.environ.setdefault('HF_HUB_DISABLE_PROGRESS_BARS', '1')
os.environ.setdefault('HF_DATASETS_DISABLE_PROGRESS_BARS', '1')
from pathlib import Path
import pytest
from nbdev.config import get_config
from nbdev.test import test_nb

_cfg = get_config()
_SKIP = _cfg.tst_flags.split() if isinstance(_cfg.tst_flags, str) else list(_cfg.tst_flags or [])
# Flags the gate runs anyway (space separated); `gpu` cells run only where CUDA is present.
_FORCE = os.environ.get('QSPEC_TEST_FLAGS', 'slow').split()
try:
    import torch
    if torch.cuda.is_available(): _FORCE.append('gpu')
except ImportError: pass


def _notest(p: Path) -> bool:
    return any((d/'.notest').exists() for d in p.parents if _cfg.config_path in d.parents or d == _cfg.config_path)


def pytest_collect_file(parent, file_path):
    if file_path.suffix == '.ipynb' and not file_path.name.startswith('_') and '.ipynb_checkpoints' not in file_path.parts \
       and not _notest(file_path):
        return NotebookFile.from_parent(parent, path=file_path)


class NotebookFile(pytest.File):
    def collect(self): yield NotebookItem.from_parent(self, name=self.path.name)


class NotebookItem(pytest.Item):
    def runtest(self):
        ok, secs = test_nb(self.path, skip_flags=_SKIP, force_flags=_FORCE, basepath=_cfg.config_path,
                           cell_timeout=_cfg.cell_timeout or None)
        if not ok: raise NotebookFailed(self.path)

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, NotebookFailed): return f'notebook {self.path.name} failed (its traceback is printed above)'
        return super().repr_failure(excinfo)

    def reportinfo(self): return self.path, 0, f'notebook: {self.path.name}'


class NotebookFailed(Exception): pass
