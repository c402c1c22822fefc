"""The shape of the code base: the numeric core runs without Lightning, and modules stay one idea each.

The size limits are a proxy for "one idea per module" (docs/architecture.md, Layout): a module
that grows past them is a sign it took on a second job.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
NUMERIC_CORE = ["arc.cloud", "arc.model", "arc.augment", "arc.field", "arc.baselines", "arc.seeding", "ptv3"]
MODULE_LINES, CLASS_LINES, TOOL_LINES = 450, 250, 120
BENCHMARKS = ("bench_", "device_check")  # measurement scripts print tables; they are not thin entry points


def test_the_numeric_core_imports_no_lightning():
    probe = (
        "import importlib, pkgutil, sys\n"
        f"for name in {NUMERIC_CORE!r}:\n"
        "    module = importlib.import_module(name)\n"
        "    for info in pkgutil.walk_packages(getattr(module, '__path__', []), name + '.'):\n"
        "        importlib.import_module(info.name)\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning'))\n"
        "print(loaded)\n"
        "sys.exit(1 if loaded else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, f"the numeric core loaded Lightning: {done.stdout[-500:]}{done.stderr[-2000:]}"


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines())


LIBRARY = sorted((ROOT / "arc").rglob("*.py"))


@pytest.mark.parametrize("path", LIBRARY, ids=[str(p.relative_to(ROOT)) for p in LIBRARY])
def test_library_modules_and_classes_stay_small(path):
    assert _lines(path) <= MODULE_LINES, f"{path.name}: {_lines(path)} lines (limit {MODULE_LINES}): split it by idea"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef):
            size = node.end_lineno - node.lineno + 1
            assert size <= CLASS_LINES, f"{path.name}: class {node.name} has {size} lines (limit {CLASS_LINES})"


TOOLS = sorted(p for p in (ROOT / "tools").glob("*.py") if not p.name.startswith(BENCHMARKS))


@pytest.mark.parametrize("path", TOOLS, ids=[p.name for p in TOOLS])
def test_tools_are_thin_entry_points(path):
    assert _lines(path) <= TOOL_LINES, f"{path.name}: {_lines(path)} lines: move the library part into arc/"
