"""The layering of docs/architecture.md holds in the code: imports point one way.

Every ``import`` / ``from ... import`` in ``cnnvis_eval/`` (module level and inside
functions alike: a function-level import that dodges a cycle is still an arrow) is parsed
with :mod:`ast` and checked against the layer table below, which mirrors the document.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "cnnvis_eval"
DOC = ROOT / "docs" / "architecture.md"

# layer of each top-level module or subpackage of cnnvis_eval, bottom (0) to top; a module
# may import modules of a lower layer, and of its own layer unless FORBIDDEN says otherwise
LAYER = {
    "errors": 0,
    "quiet": 0.5, "runtime": 0.5, "frame": 0.5, "params": 0.5, "registry": 0.5, "content_cache": 0.5,
    "graph": 1,
    "models": 2, "targets": 2,
    "cache": 2.5,
    "methods": 3, "metrics": 3, "data": 3, "report": 3, "viz": 3,
    "api": 3.5, "": 3.5,  # "": the package root (cnnvis_eval/__init__.py), the public face
    "evaluation": 4, "testing": 4, "remedy": 4,
    "cli": 5,
}
# same-layer arrows that are not allowed (source, target)
FORBIDDEN = {("methods", "metrics"), ("methods", "report"), ("methods", "data"), ("models", "targets")}
# (importing module, imported module) -> why this one arrow is allowed anyway
EXCEPTIONS = {
    ("cnnvis_eval.models.mini", "cnnvis_eval.data.synthetic"):
        "the mini models are trained on the synthetic benchmark and name its classes "
        "(data.synthetic imports only errors)",
    ("cnnvis_eval.models.mini", "cnnvis_eval.data.benchmark"):
        "the clean mini models are trained on benchmark v2 and name its classes "
        "(data.benchmark imports only data modules, errors and params)",
}
# metrics may use the Explainer interface and the method registry, never a concrete method
METHODS_FOR_METRICS = {"cnnvis_eval.methods", "cnnvis_eval.methods.base"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of every cnnvis_eval module (or module attribute) ``path`` imports."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if node.module:
                out.add(module)
            else:  # from . import a, b: each name is a module (or an attribute of the package)
                out.update(f"{module}.{a.name}" for a in node.names)
    return {m for m in out if m == "cnnvis_eval" or m.startswith("cnnvis_eval.")}


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _resolve(module: str) -> str:
    """``cnnvis_eval.__version__`` and other attributes of the root count as the root."""
    top = _top(module)
    return "cnnvis_eval" if top.startswith("__") else module


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_top_level_module_has_a_layer():
    tops = {_top(_module_name(p)) for p in MODULES}
    missing = sorted(t for t in tops if t not in LAYER)
    assert not missing, f"add {missing} to LAYER here and to docs/architecture.md"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_name(p))
def test_imports_point_down(path):
    source = _module_name(path)
    src_top = _top(source)
    bad = []
    for target in sorted(map(_resolve, _imports(path))):
        dst_top = _top(target)
        if dst_top == src_top or (source, target) in EXCEPTIONS:
            continue
        if src_top == "metrics" and dst_top == "methods" and target not in METHODS_FOR_METRICS:
            bad.append(f"{target} (metrics use the Explainer interface, never a concrete method)")
        elif LAYER[dst_top] > LAYER[src_top]:
            bad.append(f"{target} (layer {LAYER[dst_top]} above {LAYER[src_top]})")
        elif (src_top, dst_top) in FORBIDDEN:
            bad.append(f"{target} ({src_top} never import {dst_top})")
    assert not bad, f"{source} imports upward or sideways: {bad}; see docs/architecture.md"


def test_architecture_doc_names_every_layer_and_arrow():
    text = DOC.read_text(encoding="utf-8")
    present = {_top(_module_name(p)) for p in MODULES} - {""}
    missing = sorted(t for t in present if t not in text)
    assert not missing, f"docs/architecture.md does not mention {missing}"
    assert "cli -> evaluation/testing/remedy" in text
