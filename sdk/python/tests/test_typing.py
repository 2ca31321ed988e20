"""The package passes `mypy --strict` (skipped when mypy is not installed; test.sh runs it too)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "ringmq"


def test_mypy_strict() -> None:
    pytest.importorskip("mypy")
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(PKG)],
                       capture_output=True, text=True, timeout=300, cwd=PKG.parent)
    assert r.returncode == 0, r.stdout + r.stderr


def test_py_typed_installed() -> None:
    import ringmq
    assert (Path(ringmq.__file__).parent / "py.typed").exists()


def test_readme_examples_type_check(tmp_path: Path) -> None:
    """Every ```python block of the README compiles and passes `mypy --strict` on its own."""
    readme = (PKG.parent / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in readme.split("```python\n")[1:]]
    assert len(blocks) >= 6
    for i, block in enumerate(blocks):
        compile(block, f"README.md block {i}", "exec")
        (tmp_path / f"readme_example_{i}.py").write_text(block)
    pytest.importorskip("mypy")
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(tmp_path)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
