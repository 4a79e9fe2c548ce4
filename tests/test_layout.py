"""The layout's promises: Ray stays out of the model and the pure data code, and modules stay small.

Each pure module is imported in a fresh interpreter (so nothing imported earlier hides a Ray
import), then `sys.modules` must not hold `ray`.
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pipeline

ROOT = Path(__file__).resolve().parents[1]
# The only modules that may import ray: the Ray Data builder, Ray Train and its workers' stream, the
# inference driver and tasks, the explain run.
RAY_MODULES = {
    "pipeline.data.dataset",
    "pipeline.train.loop", "pipeline.train.driver", "pipeline.train.stream",
    "pipeline.infer.tasks", "pipeline.infer.driver",
    "pipeline.explain.run",
}


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(pipeline.__path__, "pipeline."))


def test_pure_modules_do_not_import_ray():
    pure = [m for m in _modules() if m not in RAY_MODULES]
    assert "pipeline.model" in pure and "pipeline.data.clips" in pure and "pipeline.data.decode" in pure
    code = ("import importlib, sys\n"
            f"for name in {pure!r}:\n"
            "    importlib.import_module(name)\n"
            "    assert 'ray' not in sys.modules, name + ' imported ray'\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]


def test_ray_modules_exist():
    """The allowlist names real modules (a stale entry would make the check above weaker)."""
    assert RAY_MODULES <= set(_modules())


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_no_module_over_400_lines_and_no_function_over_80():
    too_long, long_funcs = [], []
    for path in sorted([*ROOT.glob("pipeline/**/*.py"), *ROOT.glob("jobs/*.py")]):
        lines = path.read_text().count("\n")
        limit = 480 if path.parent.name == "model" and path.stem in ("timesformer", "vivit") else 400
        if lines > limit:
            too_long.append(f"{path.relative_to(ROOT)}: {lines}")
        for fn in _functions(ast.parse(path.read_text())):
            n = fn.end_lineno - fn.lineno + 1
            if n > 80:
                long_funcs.append(f"{path.relative_to(ROOT)}:{fn.name}: {n}")
    assert not too_long and not long_funcs, too_long + long_funcs


def test_no_references_to_documents_outside_the_repo():
    bad = []
    for path in sorted([*ROOT.glob("pipeline/**/*.py"), *ROOT.glob("jobs/*.py"), *ROOT.glob("bench/*.py"),
                        *ROOT.glob("docs/*.md"), ROOT / "README.md"]):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if "SPEC" in line:
                bad.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not bad, bad
