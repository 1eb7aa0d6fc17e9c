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

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from shardflow.errors import ConfigError

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


def load_handler(spec: str, base_dir: Path) -> LoadedHandler:
    """Import ``module:attr`` or ``path/file.py:attr`` (relative to ``base_dir``)."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise ConfigError(
            f"handler: expected 'module:function' or 'file.py:function', got {spec!r}"
        )
    if str(base_dir) not in sys.path:
        sys.path.insert(0, str(base_dir))
    if target.endswith(".py"):
        path = Path(target)
        path = path if path.is_absolute() else base_dir / path
        if not path.is_file():
            raise ConfigError(f"handler: file {path} does not exist")
        module_name = f"shardflow_handler_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise ConfigError(f"handler: cannot import {path}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    obj = getattr(module, attr, None)
    if obj is None:
        raise ConfigError(f"handler: {target} has no attribute {attr!r}")
    return adapt_handler(obj, spec)


def adapt_handler(obj: Any, name: str) -> LoadedHandler:
    if inspect.isclass(obj):
        instance: Any = obj()
        per_batch = hasattr(instance, "process_batch")
        process = instance.process_batch if per_batch else getattr(instance, "process", None)
        if process is None:
            raise ConfigError(f"handler: class {name} needs a process(record, ctx) method")
        return LoadedHandler(
            name,
            per_batch,
            process,
            getattr(instance, "setup", None),
            getattr(instance, "teardown", None),
        )
    if callable(obj):
        return LoadedHandler(name, bool(getattr(obj, "__shardflow_batch__", False)), obj)
    raise ConfigError(f"handler: {name} is not callable")
