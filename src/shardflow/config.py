"""Loading a job config: layers, ``extends:``, validation, and errors that point at the
line to fix.

Layers, lowest first: the models' defaults < the user config
(``$XDG_CONFIG_HOME/shardflow/config.yaml``; only backends, resources, slurm, logging and
worker) < the job file, after its ``extends:`` chain < ``SHARDFLOW_<SECTION>__<KEY>``
environment variables < ``--set a.b=value``. Mappings merge key by key; lists, scalars and
the one-of ``batching`` section are replaced whole by a higher layer.

Every problem found (YAML, schema, cross-field) is collected and raised at once as a
:class:`~shardflow.errors.ConfigError` whose problems carry file, line and column (1-based).
Files are read by :mod:`shardflow.configyaml`, which refuses tags, more than
:data:`MAX_ALIASES` aliases, documents that expand to more than :data:`MAX_NODES` nodes,
and files over :data:`MAX_FILE_BYTES`; the schema is :class:`JobConfig`
(:mod:`shardflow.configmodels`).
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from shardflow.configmodels import JobConfig
from shardflow.configyaml import (
    MAX_ALIASES,
    MAX_FILE_BYTES,
    MAX_NODES,
    KeyPath,
    Layer,
    Source,
    dotted,
    merge_layers,
    parse_value,
    read_file,
)
from shardflow.errors import ConfigError, ConfigProblem

__all__ = [
    "MAX_ALIASES",
    "MAX_FILE_BYTES",
    "MAX_NODES",
    "USER_SECTIONS",
    "JobConfig",
    "LoadedConfig",
    "apply_overrides",
    "config_from_snapshot",
    "job_config_schema",
    "load_job_config",
    "parse_value",
    "user_config_path",
]

USER_SECTIONS = ("backends", "resources", "slurm", "logging", "worker")
# one-of sections: merging two choices (records from one layer, bytes from another) would be wrong
_REPLACED: frozenset[KeyPath] = frozenset({("batching",)})


@dataclass(frozen=True)
class LoadedConfig:
    """A validated, path-resolved config and where each value came from.

    ``origins`` maps a dotted key to ``cli``, ``env:SHARDFLOW_X``, ``file:PATH:LINE``,
    ``user:PATH:LINE`` or ``default``.
    """

    config: JobConfig
    path: Path | None
    base_dir: Path
    origins: Mapping[str, str]


# --- layers ----------------------------------------------------------------------------


def _merge_over(base: Layer, top: Layer) -> Layer:
    """``top`` over ``base``, replacing the one-of sections whole."""
    return merge_layers(base, top, _REPLACED)


def _child_type(annotation: Any) -> tuple[str, Any]:
    """What is below a field: ("model", cls), ("dict", value annotation) or ("leaf", None)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _child_type(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        kinds = [_child_type(a) for a in typing.get_args(annotation) if a is not type(None)]
        return next((k for k in kinds if k[0] != "leaf"), ("leaf", None))
    if origin is dict:
        return "dict", typing.get_args(annotation)[1]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "model", annotation
    return "leaf", None


def _walk_schema(path: KeyPath) -> tuple[str, Any]:
    """What ``path`` names in JobConfig: ("model"|"dict"|"leaf", target), or ("error", why)."""
    kind, target = "model", JobConfig
    for i, part in enumerate(path):
        if kind == "model":
            fields = {f.alias or n: f for n, f in target.model_fields.items()}
            if part not in fields:
                guess = difflib.get_close_matches(str(part), list(fields), n=1)
                hint = f"; did you mean {guess[0]!r}?" if guess else ""
                where = f" in {dotted(path[:i])}" if i else ""
                return "error", f"unknown key {part!r}{where}{hint}"
            kind, target = _child_type(fields[part].annotation)
        elif kind == "dict":
            kind, target = _child_type(target)
        else:
            return "error", f"{dotted(path[:i])} is a single value; it has no key {part!r}"
    return kind, target


def _pairs_layer(pairs: Sequence[tuple[str, str, str]], problems: list[ConfigProblem]) -> Layer:
    """A layer from (dotted key, YAML text, origin) triples; bad keys become problems."""
    layer = Layer()
    for key, text, origin in pairs:
        shown = "--set" if origin == "cli" else origin
        path: KeyPath = tuple(key.split("."))
        if not key or any(not part for part in path):
            problems.append(ConfigProblem(shown, None, None, key, "expected key.path=value"))
            continue
        kind, why = _walk_schema(path)
        if kind == "error":
            problems.append(ConfigProblem(shown, None, None, key, why))
            continue
        try:
            value = parse_value(text, shown)
        except ConfigError as exc:
            problems.extend(ConfigProblem(shown, None, None, key, p.message) for p in exc.problems)
            continue
        node: dict[str, Any] = {}
        cursor = node
        for part in path[:-1]:
            cursor = cursor.setdefault(str(part), {})
        cursor[str(path[-1])] = value
        layer = _merge_over(layer, Layer(node, {path: Source(shown, None, None, origin)}))
    return layer


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``data`` with ``--set``-style ``a.b.c=value`` overrides applied.

    Values are YAML 1.2 scalars (``4`` is an int, ``no`` a string, ``[a, b]`` a list).
    Raises ConfigError naming each malformed or unknown key.
    """
    problems: list[ConfigProblem] = []
    layer = _pairs_layer([_split_override(o) for o in overrides], problems)
    if problems:
        raise ConfigError(problems)
    return _merge_over(Layer(dict(data)), layer).data


def _split_override(text: str) -> tuple[str, str, str]:
    key, sep, value = text.partition("=")
    return (key.strip() if sep else "", value, "cli")


def _env_pairs(env: Mapping[str, str]) -> list[tuple[str, str, str]]:
    return [
        (name[len("SHARDFLOW_") :].lower().replace("__", "."), value, f"env:{name}")
        for name, value in sorted(env.items())
        if name.startswith("SHARDFLOW_") and "__" in name
    ]


def user_config_path(env: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/shardflow/config.yaml``, else ``~/.config/shardflow/config.yaml``."""
    xdg = env.get("XDG_CONFIG_HOME", "")
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    base = Path(xdg) if xdg and os.path.isabs(xdg) else home / ".config"
    return base / "shardflow" / "config.yaml"


def _job_layer(
    path: Path, shown: str, chain: tuple[Path, ...], problems: list[ConfigProblem]
) -> Layer:
    layer = read_file(path, shown, "file", problems)
    if "extends" not in layer.data:
        return layer
    base_name = layer.data.pop("extends")
    where = layer.values.get(("extends",), Source(shown, None, None, ""))
    if not isinstance(base_name, str) or not base_name:
        problems.append(
            ConfigProblem(shown, where.line, where.column, "extends", "expected a file name")
        )
        return layer
    base_path = path.parent / base_name
    resolved = base_path.resolve()
    if resolved in chain:
        cycle = " → ".join(str(p) for p in (*chain, resolved))
        raise ConfigError(
            [ConfigProblem(shown, where.line, where.column, "extends", f"cycle: {cycle}")]
        )
    if not base_path.is_file():
        message = f"no such file {base_name!r} (relative to the folder of {shown})"
        problems.append(ConfigProblem(shown, where.line, where.column, "extends", message))
        return layer
    base = _job_layer(base_path, os.path.normpath(base_path), (*chain, resolved), problems)
    return _merge_over(base, layer)


# --- validation errors → problems --------------------------------------------------------


def _problems(error: ValidationError, layer: Layer) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    for err in error.errors():
        kind, loc, ctx = err["type"], err["loc"], err.get("ctx") or {}
        path: list[str | int] = []
        cursor: Any = layer.data
        for i, part in enumerate(loc):
            step = isinstance(cursor, dict) and part in cursor
            step = step or (
                isinstance(cursor, list) and isinstance(part, int) and part < len(cursor)
            )
            if step:
                path.append(part)
                cursor = cursor[part]
            elif kind == "missing" and i == len(loc) - 1:
                path.append(part)
            # other parts name a union member or "[key]", not a place in the file
        if "field" in ctx:
            path.append(str(ctx["field"]))
        where = tuple(path)
        if kind == "missing":
            src, message = layer.locate(where[:-1]), f"missing required key {where[-1]!r}"
        elif kind == "extra_forbidden":
            src, message = layer.locate(where, key=True), _unknown_key(where)
        elif kind in ("model_type", "model_attributes_type", "dict_type"):
            src = layer.locate(where)
            message = f"expected a mapping (key: value, …), got {err.get('input')!r}"
        else:
            src, message = layer.locate(where, key="[key]" in loc), err["msg"]
            value = err.get("input")
            if "message" not in ctx and not isinstance(value, dict | list):
                message += f", got {value!r}"  # pydantic's own messages do not say what was given
        problems.append(ConfigProblem(src.file, src.line, src.column, dotted(where), message))
    return problems


def _unknown_key(path: KeyPath) -> str:
    kind, target = _walk_schema(path[:-1])
    allowed = [f.alias or n for n, f in target.model_fields.items()] if kind == "model" else []
    guess = difflib.get_close_matches(str(path[-1]), allowed, n=1)
    if guess:
        return f"unknown key {path[-1]!r}; did you mean {guess[0]!r}?"
    return f"unknown key {path[-1]!r} (allowed here: {', '.join(allowed)})"


# --- loading -----------------------------------------------------------------------------


def _is_url(text: str) -> bool:
    return "://" in text


def _local_path(text: str, base: Path) -> str:
    return os.path.normpath(base / os.path.expanduser(text))


def _resolve_paths(cfg: JobConfig, base_dir: Path, cwd: Path) -> JobConfig:
    """Job-relative input and handler paths; cwd-relative local backends as URLs."""

    def ref(spec: str | None) -> str | None:
        target, _, attr = (spec or "").rpartition(":")
        if spec is None or not target.endswith(".py"):
            return spec
        return f"{_local_path(target, base_dir)}:{attr}"

    def sqlite(url: str | None) -> str | None:
        if url is None or _is_url(url):
            return url
        path, sep, query = url.partition("?")
        return f"sqlite://{_local_path(path, cwd)}{sep}{query}"

    raw = cfg.input.path
    paths = [
        p if _is_url(p) else _local_path(p, base_dir)
        for p in ([raw] if isinstance(raw, str) else raw)
    ]
    storage = cfg.backends.storage
    if not _is_url(storage):
        storage = Path(_local_path(storage, cwd)).as_uri()
    return cfg.model_copy(
        update={
            "handler": ref(cfg.handler),
            "input": cfg.input.model_copy(
                update={"path": paths[0] if isinstance(raw, str) else paths}
            ),
            "batching": cfg.batching.model_copy(update={"function": ref(cfg.batching.function)}),
            "backends": cfg.backends.model_copy(
                update={
                    "storage": storage,
                    "state": sqlite(cfg.backends.state),
                    "queue": sqlite(cfg.backends.queue),
                }
            ),
        }
    )


def _origins(cfg: JobConfig, layer: Layer) -> dict[str, str]:
    origins: dict[str, str] = {}

    def visit(value: Any, path: KeyPath) -> None:
        if isinstance(value, dict) and value:
            for key, child in value.items():
                visit(child, (*path, key))
            return
        src = layer.values.get(path)
        origins[dotted(path)] = src.origin if src is not None else "default"

    visit(cfg.model_dump(mode="json", by_alias=True), ())
    return origins


def load_job_config(
    path: Path,
    overrides: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    user_config: Path | None = None,
    cwd: Path | None = None,
) -> LoadedConfig:
    """Read, layer, validate and resolve a job file (see the module docstring for layers).

    ``env`` defaults to ``os.environ``, ``user_config`` to :func:`user_config_path`,
    ``cwd`` (against which local backend paths resolve) to the current directory.
    Raises ConfigError with every problem found.
    """
    env = os.environ if env is None else env
    cwd = Path(os.path.abspath(cwd or Path.cwd()))
    path = Path(path)
    job_path = Path(os.path.abspath(path))
    problems: list[ConfigProblem] = []
    layers: list[Layer] = []
    user = user_config if user_config is not None else user_config_path(env)
    if user.is_file():
        layer = read_file(user, str(user), "user", problems)
        for key in [k for k in layer.data if k not in USER_SECTIONS]:
            src = layer.keys[(key,)]
            message = f"only {', '.join(USER_SECTIONS)} may be set in the user config"
            problems.append(ConfigProblem(src.file, src.line, src.column, key, message))
            del layer.data[key]
        layers.append(layer)
    layers.append(_job_layer(path, str(path), (job_path.resolve(),), problems))
    layers.append(_pairs_layer(_env_pairs(env), problems))
    layers.append(_pairs_layer([_split_override(o) for o in overrides], problems))
    merged = reduce(_merge_over, layers)
    cfg: JobConfig | None = None
    try:
        cfg = JobConfig.model_validate(merged.data)
    except ValidationError as exc:
        problems.extend(_problems(exc, merged))
    if problems or cfg is None:
        raise ConfigError(sorted(problems, key=lambda p: (p.file, p.line or 0, p.column or 0)))
    cfg = _resolve_paths(cfg, job_path.parent, cwd)
    return LoadedConfig(cfg, job_path, job_path.parent, _origins(cfg, merged))


def config_from_snapshot(data: Mapping[str, Any]) -> JobConfig:
    """Rebuild a config from ``model_dump(mode="json")`` (resolved paths stay as they are).

    Raises ConfigError if the snapshot does not validate (e.g. written by a newer version).
    """
    try:
        return JobConfig.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(
            _problems(exc, Layer(dict(data), {(): Source("<snapshot>", None, None, "")}))
        ) from None


def job_config_schema() -> dict[str, Any]:
    """The JSON Schema of a job file (JobConfig plus the loader's ``extends`` key)."""
    schema = JobConfig.model_json_schema(by_alias=True)
    schema["properties"] = {
        "extends": {
            "type": "string",
            "description": "A job file this one builds on (relative to this file); "
            "this file's values override it.",
        }
    } | schema["properties"]
    schema["title"] = "shardflow job"
    return {"$schema": "https://json-schema.org/draft/2020-12/schema"} | schema
