"""Loading a job config: YAML 1.2 with line numbers, layers, ``extends:``, and errors that
point at the line to fix.

Layers, lowest first: the models' defaults < the user config
(``$XDG_CONFIG_HOME/shardflow/config.yaml``; only backends, resources, slurm, logging and
worker) < the job file, after its ``extends:`` chain < ``SHARDFLOW_<SECTION>__<KEY>``
environment variables < ``--set a.b=value``. Mappings merge key by key; lists, scalars and
the one-of ``batching`` section are replaced whole by a higher layer.

Every problem found (YAML, schema, cross-field) is collected and raised at once as a
:class:`~shardflow.errors.ConfigError` whose problems carry file, line and column (1-based).
The YAML reader refuses tags, more than :data:`MAX_ALIASES` aliases, documents that expand
to more than :data:`MAX_NODES` nodes, and files over :data:`MAX_FILE_BYTES`.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError, YAMLWarning
from ruamel.yaml.events import AliasEvent, DocumentStartEvent
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.reader import ReaderError

from shardflow.configtypes import JobConfig
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

MAX_FILE_BYTES = 1024 * 1024
MAX_ALIASES = 100
MAX_NODES = 10_000
USER_SECTIONS = ("backends", "resources", "slurm", "logging", "worker")
_REPLACED = frozenset({("batching",)})  # one-of sections: merging two choices would be wrong
_MERGE_TAG = "tag:yaml.org,2002:merge"

KeyPath = tuple[str | int, ...]


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


@dataclass(frozen=True)
class _Source:
    file: str
    line: int | None
    column: int | None
    origin: str


@dataclass
class _Layer:
    """Plain data plus the source of every value node and every mapping key in it."""

    data: dict[str, Any] = field(default_factory=dict)
    values: dict[KeyPath, _Source] = field(default_factory=dict)
    keys: dict[KeyPath, _Source] = field(default_factory=dict)


def dotted(path: KeyPath) -> str:
    """``("retry", "rules", 0, "class")`` → ``retry.rules[0].class``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


# --- YAML ------------------------------------------------------------------------------


def _tag(node: Node) -> str:
    tag = node.tag
    return str(getattr(tag, "value", tag))  # a Tag object in some ruamel versions


def _scalar(text: str, tag: str) -> Any:
    """A composed YAML 1.2 (core schema) scalar as Python, from its resolved tag."""
    kind = tag.rpartition(":")[2]
    clean = text.replace("_", "")
    try:
        if kind == "null":
            return None
        if kind == "bool":
            return text.lower() == "true"
        if kind == "int":
            return int(clean, 0) if clean.lower().startswith(("0x", "0o", "0b")) else int(clean)
        if kind == "float":
            return float(clean.lower().replace(".inf", "inf").replace(".nan", "nan"))
    except ValueError:
        pass  # a resolver pattern wider than Python's literals: keep the text
    return text


def _fail(file: str, message: str, line: int | None = None, col: int | None = None) -> ConfigError:
    return ConfigError([ConfigProblem(file, line, col, "", message)])


class _SyntaxError(ConfigError):
    """Text that is not YAML at all (as opposed to YAML this reader refuses)."""


def _compose(text: str, file: str) -> Node | None:
    """The node graph of one YAML 1.2 document, after the safety checks (ConfigError)."""
    yaml = YAML(typ="rt")
    aliases = 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", YAMLWarning)  # a re-used anchor is legal YAML
            for event in yaml.parse(text):
                line, col = event.start_mark.line + 1, event.start_mark.column + 1
                if isinstance(event, DocumentStartEvent) and event.version not in (None, (1, 2)):
                    raise _fail(file, "only YAML 1.2 is read: remove the %YAML line", line)
                tag = getattr(event, "tag", None)
                if tag is not None:
                    message = f"YAML tags such as {tag!s} are not allowed: write a plain value"
                    raise _fail(file, message, line, col)
                aliases += isinstance(event, AliasEvent)
                if aliases > MAX_ALIASES:
                    raise _fail(file, f"more than {MAX_ALIASES} aliases (*name): refused", line)
            root: Node | None = yaml.compose(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
        if isinstance(exc, ReaderError):  # a character YAML does not allow: no mark, a position
            line = text.count("\n", 0, exc.position) + 1
            col = exc.position - text.rfind("\n", 0, exc.position)
            problem = f"{exc.reason} (character {exc.character!r})"
        else:
            problem = getattr(exc, "problem", None) or str(exc)
        message = f"YAML syntax error: {problem}"
        raise _SyntaxError([ConfigProblem(file, line, col, "", message)]) from None
    if root is not None:
        _count_nodes(root, {}, set(), file)
    return root


def parse_value(text: str, source: str = "--set") -> Any:
    """A ``--set`` or environment value as YAML 1.2: ``4`` → 4, ``no`` → "no", ``~`` → None,
    ``[a, b]`` → a list. Text that is not YAML (``*.jsonl``) and unquoted text that YAML
    would cut (``job #1``) stay as written. Raises ConfigError (naming ``source``) for a tag.
    """
    try:
        root = _compose(text, source)
    except _SyntaxError:
        return text.strip()
    problems: list[ConfigProblem] = []
    value = None if root is None else _build(root, (), _Layer(), problems, source, "cli")
    if problems:
        raise ConfigError(problems)
    if isinstance(value, str) and not text.strip().startswith(("'", '"')):
        return text.strip()  # a plain scalar: keep what follows a " #" or spans lines
    return value


def _read_text(text: str, file: str, kind: str, problems: list[ConfigProblem]) -> _Layer:
    """Parse one job or user file into a layer. Duplicate keys are added to ``problems``
    (the first value is kept, so validation goes on); other problems raise ConfigError."""
    root = _compose(text, file)
    if root is None:
        return _Layer(values={(): _Source(file, 1, 1, f"{kind}:{file}:1")})
    if not isinstance(root, MappingNode):
        raise _fail(file, "expected a mapping of keys (name: …, handler: …, input: …)", 1, 1)
    layer = _Layer()
    layer.data = _build(root, (), layer, problems, file, kind)
    return layer


def _count_nodes(node: Node, memo: dict[int, int], active: set[int], file: str) -> int:
    """The node count with aliases expanded, computed without expanding them."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:
        raise _fail(file, "a recursive alias (a node that contains itself) is not allowed")
    active.add(key)
    children: list[Node] = []
    if isinstance(node, MappingNode):
        children = [n for pair in node.value for n in pair]
    elif isinstance(node, SequenceNode):
        children = list(node.value)
    total = 1 + sum(_count_nodes(child, memo, active, file) for child in children)
    active.discard(key)
    if total > MAX_NODES:
        message = f"the document expands to more than {MAX_NODES} nodes (alias bomb?): refused"
        raise _fail(file, message, node.start_mark.line + 1)
    memo[key] = total
    return total


def _build(
    node: Node, path: KeyPath, layer: _Layer, problems: list[ConfigProblem], file: str, kind: str
) -> Any:
    mark = node.start_mark
    src = _Source(file, mark.line + 1, mark.column + 1, f"{kind}:{file}:{mark.line + 1}")
    layer.values[path] = src
    if isinstance(node, SequenceNode):
        return [
            _build(item, (*path, i), layer, problems, file, kind)
            for i, item in enumerate(node.value)
        ]
    if isinstance(node, ScalarNode):
        return _scalar(node.value, _tag(node))
    out: dict[str, Any] = {}
    # merge keys (<<) first, so that keys written in this mapping override them
    pairs = sorted(node.value, key=lambda kv: _tag(kv[0]) != _MERGE_TAG)
    first_line: dict[str, int] = {}
    for key_node, value_node in pairs:
        kmark = key_node.start_mark
        where = (file, kmark.line + 1, kmark.column + 1)
        if _tag(key_node) == _MERGE_TAG:
            merged = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
            for base in merged:
                if isinstance(base, MappingNode):
                    out.update(_build(base, path, layer, problems, file, kind))
            layer.values[path] = src
            continue
        if not isinstance(key_node, ScalarNode):
            problems.append(ConfigProblem(*where, dotted(path), "keys must be plain names"))
            continue
        key = str(key_node.value)
        if key in first_line:
            message = f"duplicate key {key!r} (first set on line {first_line[key]})"
            problems.append(ConfigProblem(*where, dotted((*path, key)), message))
            continue
        first_line[key] = kmark.line + 1
        layer.keys[(*path, key)] = _Source(*where, src.origin)
        out[key] = _build(value_node, (*path, key), layer, problems, file, kind)
    return out


def _read_file(path: Path, shown: str, kind: str, problems: list[ConfigProblem]) -> _Layer:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError([ConfigProblem(shown, None, None, "", "file over 1 MiB: refused")])
        raw = path.read_bytes()[: MAX_FILE_BYTES + 1]
    except OSError as exc:
        message = f"cannot read the file ({exc.strerror or exc}): check the path"
        raise ConfigError([ConfigProblem(shown, None, None, "", message)]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError([ConfigProblem(shown, None, None, "", "file over 1 MiB: refused")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        message = f"not UTF-8 text (byte {exc.start}): save the file as UTF-8"
        raise ConfigError([ConfigProblem(shown, None, None, "", message)]) from None
    return _read_text(text, shown, kind, problems)


# --- layers ----------------------------------------------------------------------------


def _merge(base: _Layer, top: _Layer) -> _Layer:
    """``top`` over ``base``: mappings merge, anything else (and ``_REPLACED``) is replaced."""
    roots: set[KeyPath] = set()

    def merge(low: dict[str, Any], high: dict[str, Any], path: KeyPath) -> dict[str, Any]:
        out = dict(low)
        for key, value in high.items():
            sub = (*path, key)
            if isinstance(value, dict) and isinstance(out.get(key), dict) and sub not in _REPLACED:
                out[key] = merge(out[key], value, sub)
            else:
                out[key] = value
                roots.add(sub)
        return out

    data = merge(base.data, top.data, ())

    def kept(path: KeyPath) -> bool:
        return not any(path[:i] in roots for i in range(1, len(path) + 1))

    return _Layer(
        data,
        {p: s for p, s in base.values.items() if kept(p)} | top.values,
        {p: s for p, s in base.keys.items() if kept(p)} | top.keys,
    )


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


def _pairs_layer(pairs: Sequence[tuple[str, str, str]], problems: list[ConfigProblem]) -> _Layer:
    """A layer from (dotted key, YAML text, origin) triples; bad keys become problems."""
    layer = _Layer()
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
        layer = _merge(layer, _Layer(node, {path: _Source(shown, None, None, origin)}))
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
    return _merge(_Layer(dict(data)), layer).data


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
) -> _Layer:
    layer = _read_file(path, shown, "file", problems)
    if "extends" not in layer.data:
        return layer
    base_name = layer.data.pop("extends")
    where = layer.values.get(("extends",), _Source(shown, None, None, ""))
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
    return _merge(base, layer)


# --- validation errors → problems --------------------------------------------------------


def _locate(layer: _Layer, path: KeyPath, *, key: bool = False) -> _Source:
    """The source of ``path`` (its key when ``key``), else of its nearest known ancestor."""
    if key and path in layer.keys:
        return layer.keys[path]
    for i in range(len(path), -1, -1):
        if path[:i] in layer.values:
            return layer.values[path[:i]]
    return _Source("<config>", None, None, "default")


def _problems(error: ValidationError, layer: _Layer) -> list[ConfigProblem]:
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
            src, message = _locate(layer, where[:-1]), f"missing required key {where[-1]!r}"
        elif kind == "extra_forbidden":
            src, message = _locate(layer, where, key=True), _unknown_key(where)
        elif kind in ("model_type", "model_attributes_type", "dict_type"):
            src = _locate(layer, where)
            message = f"expected a mapping (key: value, …), got {err.get('input')!r}"
        else:
            src, message = _locate(layer, where, key="[key]" in loc), err["msg"]
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


def _origins(cfg: JobConfig, layer: _Layer) -> dict[str, str]:
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
    layers: list[_Layer] = []
    user = user_config if user_config is not None else user_config_path(env)
    if user.is_file():
        layer = _read_file(user, str(user), "user", problems)
        for key in [k for k in layer.data if k not in USER_SECTIONS]:
            src = layer.keys[(key,)]
            message = f"only {', '.join(USER_SECTIONS)} may be set in the user config"
            problems.append(ConfigProblem(src.file, src.line, src.column, key, message))
            del layer.data[key]
        layers.append(layer)
    layers.append(_job_layer(path, str(path), (job_path.resolve(),), problems))
    layers.append(_pairs_layer(_env_pairs(env), problems))
    layers.append(_pairs_layer([_split_override(o) for o in overrides], problems))
    merged = reduce(_merge, layers)
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
            _problems(exc, _Layer(dict(data), {(): _Source("<snapshot>", None, None, "")}))
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
