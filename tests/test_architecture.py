"""The package's layering (README "Architecture"), checked on the source with an AST pass over
every import statement, lazy ones (inside functions) included:

- no import cycle among gastrt's modules;
- imports only go downward in the layer table below (same-layer imports are fine while acyclic);
- nothing imports the package root ``gastrt`` (it is a re-export facade for users);
- modules under ``backends/`` never import the ``backends`` package ``__init__``;
- no module imports another module's private (``_name``) names.

Each rule is also run on a small synthetic package that breaks it, so the checks can fail.
"""
from __future__ import annotations

import ast
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "python")

# module (or package prefix) -> layer; the longest matching prefix wins
LAYERS = {
    "gastrt.errors": 1, "gastrt.argtypes": 1, "gastrt.plan": 1, "gastrt.engine_file": 1,
    "gastrt.skeletons": 1, "gastrt._version": 1, "gastrt._native": 1,
    "gastrt.checkpoint": 2, "gastrt.families": 2, "gastrt.keypoints": 2, "gastrt.reference": 2,
    "gastrt.backends": 3,
    "gastrt.builder": 4, "gastrt.engine": 4, "gastrt.stream": 4, "gastrt.onnx_export": 4,
    "gastrt.tensorrt_builder": 4,
    "gastrt.lifting": 5, "gastrt.render": 5, "gastrt.bench": 5, "gastrt.stream.jsonl": 5, "gastrt.evaluation": 5,
    "gastrt.ray": 5,
    "gastrt.cli": 6, "gastrt.__main__": 6,
}
# the root re-exports the API (build, load, Engine, errors, build_config): it may import any
# layer up to the engine's, and no module imports it
ROOT_LAYER = 4.5
# packages whose __init__ only re-exports: their own modules import siblings, never the package
FACADES = ("gastrt.backends",)
PRIVATE_OK = {"_version", "_native"}   # modules whose leading underscore marks "internal file"


def module_files(src: str, package: str = "gastrt") -> dict[str, str]:
    """module name -> file path of every .py under src/package."""
    mods = {}
    for dirpath, dirnames, files in os.walk(os.path.join(src, package)):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for f in files:
            path = os.path.join(dirpath, f)
            if f.endswith(".py"):
                rel = os.path.relpath(path, src)[:-3].replace(os.sep, ".")
                mods[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return mods


def _is_package(path: str) -> bool:
    return os.path.basename(path) == "__init__.py"


def imports_of(mod: str, path: str, mods: dict[str, str]) -> list[tuple[str, list[str], int]]:
    """-> [(imported module, names taken from it, line)] for every import in the file."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    pkg = mod if _is_package(path) else mod.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                out.append((a.name, [], node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = pkg.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                target = base + ("." + node.module if node.module else "")
            else:
                target = node.module or ""
            names = [a.name for a in node.names]
            # `from pkg import sub` imports the submodule pkg.sub
            subs = [n for n in names if f"{target}.{n}" in mods]
            for n in subs:
                out.append((f"{target}.{n}", [], node.lineno))
            rest = [n for n in names if n not in subs]
            if rest or not subs:
                out.append((target, rest, node.lineno))
    return out


def graph(src: str, package: str = "gastrt") -> tuple[dict, dict]:
    """-> (edges: module -> {imported gastrt module: line}, names: (module, imported) -> names)."""
    mods = module_files(src, package)
    edges, names = {}, {}
    for mod, path in mods.items():
        e = {}
        for target, taken, line in imports_of(mod, path, mods):
            if target != package and not target.startswith(package + "."):
                continue
            while target not in mods and "." in target:   # an attribute of a module, or _native
                target = target.rpartition(".")[0]
            if target == mod:
                continue
            e.setdefault(target, line)
            names.setdefault((mod, target), []).extend(taken)
        edges[mod] = e
    return edges, names


def cycles(edges: dict) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def layer_of(mod: str, package: str = "gastrt", layers: dict | None = None) -> float:
    layers = LAYERS if layers is None else layers
    if mod == package:
        return ROOT_LAYER
    best = None
    for prefix in layers:
        if mod == prefix or mod.startswith(prefix + "."):
            if best is None or len(prefix) > len(best):
                best = prefix
    if best is None:
        raise AssertionError(f"{mod} has no layer: add it to LAYERS (and to README's architecture table)")
    return layers[best]


def violations(src: str, package: str = "gastrt", layers: dict | None = None,
               facades: tuple = FACADES) -> list[str]:
    """Every rule broken in src/package, one line each."""
    edges, names = graph(src, package)
    bad = [f"import cycle: {' -> '.join(c)}" for c in cycles(edges)]
    for mod, targets in sorted(edges.items()):
        for target, line in sorted(targets.items()):
            where = f"{mod}:{line} imports {target}"
            if target == package:
                bad.append(f"{where}: the package root is a facade for users; import the module that defines it")
                continue
            lm, lt = layer_of(mod, package, layers), layer_of(target, package, layers)
            if lt > lm:
                bad.append(f"{where}: upward import (layer {lm} -> {lt})")
            if target in facades and mod.startswith(target + "."):
                bad.append(f"{where}: modules of {target} import their siblings, not the package")
            private = [n for n in names.get((mod, target), ()) if n.startswith("_") and n not in PRIVATE_OK
                       and not n.startswith("__")]
            if private:
                bad.append(f"{where}: private name(s) {', '.join(private)}")
    return bad


# ---- the package ---------------------------------------------------------------------------------
def test_gastrt_layering():
    bad = violations(SRC)
    assert not bad, "\n".join(bad)


def test_every_module_has_a_layer():
    for mod in module_files(SRC):
        layer_of(mod)



def test_runtime_import_needs_no_optional_layer():
    """`import gastrt` + load/lift never import torch, onnx, tensorrt, ray, matplotlib."""
    import subprocess

    code = ("import sys, gastrt; import gastrt.engine; "
            "bad = [m for m in ('torch', 'onnx', 'onnxruntime', 'tensorrt', 'ray', 'matplotlib', "
            "'gastrt.bench', 'gastrt.cli', 'gastrt.lifting', 'gastrt.render') if m in sys.modules]; "
            "print(','.join(bad))")
    env = dict(os.environ)
    import gastrt
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(gastrt.__file__)) + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"importing gastrt pulled in: {r.stdout.strip()}"


# ---- the checker itself can fail -------------------------------------------------------------------
def _write(tmp_path, files: dict) -> str:
    for rel, text in files.items():
        p = tmp_path / "src" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return str(tmp_path / "src")


TOY_LAYERS = {"toy.low": 1, "toy.mid": 2, "toy.top": 3, "toy.be": 2}


@pytest.mark.parametrize("files, expect", [
    # a lazy (function-level) import closing a cycle
    ({"toy/__init__.py": "", "toy/low.py": "def f():\n    from . import mid\n",
      "toy/mid.py": "from .low import f\n"}, "import cycle"),
    ({"toy/__init__.py": "", "toy/low.py": "from .top import x\n", "toy/top.py": "x = 1\n"}, "upward import"),
    ({"toy/__init__.py": "x = 1\n", "toy/mid.py": "from . import x\n"}, "package root"),
    ({"toy/__init__.py": "", "toy/low.py": "_y = 1\n", "toy/mid.py": "from .low import _y\n"}, "private name"),
    ({"toy/__init__.py": "", "toy/be/__init__.py": "from .a import f\n", "toy/be/a.py": "f = 1\n",
      "toy/be/b.py": "from . import f\n"}, "not the package"),
])
def test_checker_catches(tmp_path, files, expect):
    src = _write(tmp_path, files)
    bad = violations(src, "toy", TOY_LAYERS, facades=("toy.be",))
    assert any(expect in b for b in bad), bad


def test_checker_accepts_a_clean_package(tmp_path):
    src = _write(tmp_path, {"toy/__init__.py": "from .top import x\n", "toy/low.py": "y = 1\n",
                            "toy/mid.py": "from .low import y\n",
                            "toy/top.py": "def g():\n    from .mid import y\n    return y\nx = 1\n"})
    assert violations(src, "toy", TOY_LAYERS, facades=("toy.be",)) == []


def test_compiled_extension_shadows_its_placeholder():
    """python/gastrt/_native.py only stands in when the extension is missing: a built install
    imports the compiled module, never the placeholder."""
    from gastrt.backends.base import native_module

    mod = native_module()
    if mod is None:
        pytest.skip("this install has no compiled runtime")
    assert not mod.__file__.endswith(".py"), mod.__file__
