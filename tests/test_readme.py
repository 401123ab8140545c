"""The README's Python examples run as written (a README that lies is a bug).

Every ```python block of README.md is executed in a fresh namespace, in a
temporary working directory (examples may write results folders).  Blocks
fenced as ```py instead are scripts for another launcher (torchrun) and are
not run here; tests/test_distributed.py covers what they show.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_examples():
    assert len(_python_blocks()) >= 5


@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_readme_example_runs(index, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = _python_blocks()[index]
    # a real module object: torch.compile looks the defining module up in sys.modules
    module = types.ModuleType(f"readme_block_{index}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(code, f"README.md python block {index}", "exec"), module.__dict__)
