"""No code path of shardflow unpickles, unmarshals or evaluates data.

Data read from stores and queues (manifests, markers, task messages, checkpoints) is
JSON, Parquet or Arrow: formats whose readers build values, never objects or code. This
scans the syntax tree of every module under ``src/shardflow`` (so comments and
docstrings that mention pickle do not count) and fails on any use of:

- the modules ``pickle``, ``marshal``, ``shelve`` and their relatives;
- ``eval(`` / ``exec(``;
- ``yaml.load(`` and the other PyYAML loaders that build objects, and ruamel's
  ``YAML(typ="unsafe")``;
- anything named ``*pickle*`` (``read_pickle``, ``allow_pickle=True``…);
- a no-argument ``.recv()``, which unpickles what a multiprocessing pipe delivers
  (``recv_bytes()`` does not);
- ``multiprocessing`` itself, outside the allowlist below.

Documented exceptions (:data:`ALLOWED_MULTIPROCESSING`): the isolation mode starts its
handler process with multiprocessing's ``spawn``, which pickles the *process arguments*
(our own handler spec and class rules) in the parent; the items and results then cross
the pipe as JSON bytes (``send_bytes``/``recv_bytes``), never pickled.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "shardflow"

FORBIDDEN_MODULES = {
    "pickle",
    "cPickle",
    "_pickle",
    "pickletools",
    "marshal",
    "shelve",
    "dill",
    "cloudpickle",
    "jsonpickle",
    "joblib",
    "copyreg",
}
UNSAFE_YAML = {"load", "load_all", "unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}
ALLOWED_MULTIPROCESSING = {
    "worker/isolation.py": "spawn pickles only our own process arguments; items are JSON bytes",
    "worker/isolated_child.py": "the child's end of that pipe: JSON bytes only (recv_bytes)",
}


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return ""


def problems_in(source: str, rel: str) -> list[str]:
    """What the scan finds in ``source``, the module at ``rel`` under src/shardflow."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, rel)):
        where = f"{rel}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
            )
            for module in modules:
                root = module.split(".")[0]
                if root in FORBIDDEN_MODULES:
                    found.append(f"{where}: imports {module}")
                if root == "multiprocessing" and rel not in ALLOWED_MULTIPROCESSING:
                    found.append(f"{where}: imports {module} (pickles what it passes)")
        elif isinstance(node, ast.Call):
            func = _name(node.func)
            if func in ("eval", "exec", "builtins.eval", "builtins.exec"):
                found.append(f"{where}: calls {func}()")
            if func.startswith("yaml.") and func.split(".")[-1] in UNSAFE_YAML:
                found.append(f"{where}: calls {func}()")
            if func.endswith(".recv") and not node.args:
                found.append(f"{where}: calls {func}() (unpickles; use recv_bytes)")
            for keyword in node.keywords:
                value = keyword.value
                if (
                    keyword.arg == "typ"
                    and isinstance(value, ast.Constant)
                    and value.value in ("unsafe", "full")
                ):
                    found.append(f"{where}: YAML(typ={value.value!r})")
                if keyword.arg and "pickle" in keyword.arg.lower():
                    found.append(f"{where}: passes {keyword.arg}=")
        elif isinstance(node, ast.Name | ast.Attribute):
            name = node.id if isinstance(node, ast.Name) else node.attr
            if "pickle" in name.lower() or name in ("marshal", "shelve"):
                found.append(f"{where}: uses {name}")
    return found


def test_no_module_unpickles_unmarshals_or_evaluates() -> None:
    modules = sorted(SRC.rglob("*.py"))
    assert len(modules) > 50  # the scan sees the whole package
    problems = [
        problem
        for path in modules
        for problem in problems_in(
            path.read_text(encoding="utf-8"), path.relative_to(SRC).as_posix()
        )
    ]
    assert problems == []


def test_the_scan_catches_what_it_is_meant_to() -> None:
    source = (
        "import pickle\nfrom marshal import loads\nimport yaml\nfrom ruamel.yaml import YAML\n"
        "import multiprocessing\n"
        "def f(conn, data, np):\n"
        "    eval(data)\n    yaml.load(data)\n    YAML(typ='unsafe')\n    conn.recv()\n"
        "    np.load(data, allow_pickle=True)\n    return pickle.loads(data)\n"
    )
    kinds = " ".join(problems_in(source, "split/probe.py"))
    for expected in (
        "imports pickle",
        "imports marshal",
        "calls eval()",
        "calls yaml.load()",
        "YAML(typ='unsafe')",
        "calls conn.recv()",
        "passes allow_pickle=",
        "uses pickle",
        "imports multiprocessing",
    ):
        assert expected in kinds, expected


def test_the_isolated_handler_sends_items_as_json_bytes() -> None:
    source = (SRC / "worker" / "isolation.py").read_text(encoding="utf-8")
    assert "send_bytes(orjson.dumps(" in source
    assert "orjson.loads(conn.recv_bytes())" in source
