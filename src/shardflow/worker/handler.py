"""Loading the user's handler and adapting its three forms to one interface.

Forms (``handler:`` in the job config names one):

- a function per item: ``fn(record, ctx) -> dict | list[dict] | None``;
- a function per batch, marked with :func:`batch_handler`:
  ``fn(records, ctx) -> iterable`` with one entry per record, in order
  (a dict, a list of dicts, or None);
- a class with ``setup(ctx)``, ``process(record, ctx)`` (or ``process_batch``) and
  ``teardown(ctx)``, for expensive clients built once per worker.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from shardflow.errors import HandlerLoadError

F = TypeVar("F", bound=Callable[..., Any])

Output = dict[str, Any] | list[dict[str, Any]] | None


def batch_handler(fn: F) -> F:
    """Mark ``fn(records, ctx)`` as a per-batch handler."""
    fn.__shardflow_batch__ = True  # type: ignore[attr-defined]
    return fn


@dataclass
class LoadedHandler:
    """A handler in one shape: ``run_batch(records, ctx)`` → one output per record."""

    name: str
    per_batch: bool
    process: Callable[..., Any]
    setup: Callable[[Any], Any] | None = None
    teardown: Callable[[Any], Any] | None = None

    def close(self) -> None:
        """Release what the handler holds outside this process (isolation mode)."""
        return

    def run_one(self, record: dict[str, Any], ctx: Any) -> Output:
        if self.per_batch:
            (out,) = list(self.process([record], ctx))
            return check_output(out)
        return check_output(self.process(record, ctx))

    def run_batch(self, records: Sequence[dict[str, Any]], ctx: Any) -> list[Output]:
        """Outputs for ``records``; raises if the handler raises (caller isolates items)."""
        outs: Iterable[Any] = self.process(list(records), ctx)
        result = [check_output(o) for o in outs]
        if len(result) != len(records):
            raise TypeError(
                f"batch handler {self.name} returned {len(result)} outputs "
                f"for {len(records)} records (it must return one per record)"
            )
        return result


def check_output(out: Any) -> Output:
    """``out`` if it is a handler output (dict, list of dicts, None); else TypeError."""
    if out is None or isinstance(out, dict):
        return out
    if isinstance(out, list) and all(isinstance(o, dict) for o in out):
        return out
    raise TypeError(
        f"handler must return a dict, a list of dicts or None, not {type(out).__name__}"
    )


def split_spec(spec: str) -> tuple[str, str]:
    """``(target, attribute)`` of ``module:attr`` or ``path/file.py:attr``."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise HandlerLoadError(
            f"handler: expected 'module:function' or 'file.py:function', got {spec!r}"
        )
    return target, attr


def load_handler(spec: str, base_dir: Path) -> LoadedHandler:
    """Import ``module:attr`` or ``path/file.py:attr`` (relative to ``base_dir``).

    Raises :class:`HandlerLoadError` whatever goes wrong (the file or module is missing,
    the import raises, the name is missing, not callable, or takes the wrong arguments),
    with the reason in its message.
    """
    target, attr = split_spec(spec)
    try:
        module = _import(target, base_dir)
    except HandlerLoadError:
        raise
    except SyntaxError as exc:
        where = f"{exc.filename}:{exc.lineno}" if exc.filename else target
        raise HandlerLoadError(f"handler {spec!r}: syntax error at {where}: {exc.msg}") from exc
    except Exception as exc:  # the module's own code raised while it was imported
        raise HandlerLoadError(
            f"handler {spec!r}: importing {target} failed: {type(exc).__name__}: {exc}"
        ) from exc
    obj = getattr(module, attr, None)
    if obj is None:
        names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise HandlerLoadError(
            f"handler {spec!r}: {target} has no {attr!r}"
            + (f" (it defines {', '.join(names[:8])})" if names else "")
        )
    return adapt_handler(obj, spec)


def _import(target: str, base_dir: Path) -> Any:
    if str(base_dir) not in sys.path:
        sys.path.insert(0, str(base_dir))
    if target.endswith(".py"):
        path = Path(target)
        path = path if path.is_absolute() else base_dir / path
        if not path.is_file():
            raise HandlerLoadError(f"handler: file {path} does not exist")
        module_name = f"shardflow_handler_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise HandlerLoadError(f"handler: cannot import {path}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        module_spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name and target.startswith(exc.name):
            part = "" if exc.name == target else f" (for {target!r})"
            raise HandlerLoadError(
                f"handler: no module named {exc.name!r}{part}; looked in {base_dir} and on sys.path"
            ) from exc
        raise


def adapt_handler(obj: Any, name: str) -> LoadedHandler:
    if inspect.isclass(obj):
        try:
            instance: Any = obj()
        except Exception as exc:
            raise HandlerLoadError(
                f"handler {name!r}: the class cannot be made without arguments: {exc}"
            ) from exc
        per_batch = hasattr(instance, "process_batch")
        process = instance.process_batch if per_batch else getattr(instance, "process", None)
        if process is None:
            raise HandlerLoadError(f"handler: class {name} needs a process(record, ctx) method")
        _check_arguments(process, name, "records" if per_batch else "record")
        return LoadedHandler(
            name,
            per_batch,
            process,
            getattr(instance, "setup", None),
            getattr(instance, "teardown", None),
        )
    if callable(obj):
        per_batch = bool(getattr(obj, "__shardflow_batch__", False))
        _check_arguments(obj, name, "records" if per_batch else "record")
        return LoadedHandler(name, per_batch, obj)
    raise HandlerLoadError(f"handler {name!r} is a {type(obj).__name__}, not a function or class")


def _check_arguments(fn: Any, name: str, first: str) -> None:
    """A handler is called as ``fn(record, ctx)``: refuse one that cannot be."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin or C function: it will say so itself when called
    try:
        signature.bind(None, None)
    except TypeError:
        raise HandlerLoadError(
            f"handler {name!r} takes ({', '.join(signature.parameters)}) but is called as "
            f"{getattr(fn, '__name__', 'handler')}({first}, ctx)"
        ) from None


@dataclass(frozen=True)
class HandlerCheck:
    """What :func:`check_handler` found: a ``problem`` (the job cannot run), a ``warning``
    (it could not be verified here), or neither."""

    problem: str | None = None
    warning: str | None = None


def check_handler(spec: str, base_dir: Path) -> HandlerCheck:
    """Whether ``spec`` names a handler, found without running any of its code: a file
    must exist, parse and define the name at its top level; a module is looked up (not
    imported) and its source checked the same way. A module not found here is only a
    warning: it may be installed on the cluster's nodes alone."""
    try:
        target, attr = split_spec(spec)
    except HandlerLoadError as exc:
        return HandlerCheck(problem=str(exc))
    if target.endswith(".py"):
        path = Path(target) if Path(target).is_absolute() else base_dir / target
        if not path.is_file():
            return HandlerCheck(problem=f"handler file {path} does not exist")
    else:
        found = _module_file(target, base_dir)
        if found is None:
            return HandlerCheck(
                warning=f"module {target!r} is not installed here (it must be on the nodes "
                "that run the job); its handler could not be checked"
            )
        if found.suffix != ".py":
            return HandlerCheck()  # a compiled module: nothing to read without importing it
        path = found
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as exc:
        return HandlerCheck(problem=f"handler file {path}:{exc.lineno}: syntax error: {exc.msg}")
    names = _top_level_names(tree)
    if attr not in names and "*" not in names and "__getattr__" not in names:
        defined = sorted(n for n in names if not n.startswith("_"))
        return HandlerCheck(
            problem=f"{path} defines no {attr!r}"
            + (f" (it defines {', '.join(defined[:8])})" if defined else "")
        )
    return HandlerCheck()


def _module_file(name: str, base_dir: Path) -> Path | None:
    """The source file of module ``name`` (a package's ``__init__.py``), found as the
    import system would find it, from ``base_dir`` first, but without importing it (nor
    the packages it is in)."""
    from importlib.machinery import PathFinder

    search: list[str] | None = [str(base_dir), *sys.path]
    spec = None
    parts = name.split(".")
    for n in range(len(parts)):
        spec = PathFinder.find_spec(".".join(parts[: n + 1]), search)
        if spec is None:
            return None
        search = list(spec.submodule_search_locations or []) or None
        if search is None and n < len(parts) - 1:
            return None  # a module, not a package: it has no submodules
    if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
        return None
    return Path(spec.origin)


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names
