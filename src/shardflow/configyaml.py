"""The safe YAML 1.2 reader behind the job config: plain data plus where each value came from.

Job files, user configs, ``--set`` values and environment values are all read here. The
reader keeps YAML 1.2 (core schema) meanings (``no`` is a string, ``010`` is ten) and
refuses what a config never needs but an attacker could use: tags, more than
:data:`MAX_ALIASES` aliases, nesting deeper than :data:`MAX_DEPTH` (refused as the parser
reaches it: deep flow lists parse in quadratic time, deep mappings would exhaust the
stack), documents that expand to more than :data:`MAX_NODES` nodes,
recursive aliases, files over :data:`MAX_FILE_BYTES` and text that is not UTF-8. Every
refusal is a :class:`~shardflow.errors.ConfigError` with file, line and column (1-based).

A read gives a :class:`Layer`: the data, the :class:`Source` of every value node and of
every mapping key (so that later errors can point at the line to fix). Duplicate keys are
collected as problems (the first value is kept) so that validation can go on.
:func:`merge_layers` stacks layers, keeping the sources of the values that survive.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError, YAMLWarning
from ruamel.yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    DocumentStartEvent,
)
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.reader import ReaderError

from shardflow.errors import ConfigError, ConfigProblem

__all__ = [
    "MAX_ALIASES",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_NODES",
    "KeyPath",
    "Layer",
    "Source",
    "dotted",
    "merge_layers",
    "parse_value",
    "read_file",
]

MAX_FILE_BYTES = 1024 * 1024
MAX_ALIASES = 100
MAX_DEPTH = 64  # nested lists and mappings; a job file needs 4
MAX_NODES = 10_000
_MERGE_TAG = "tag:yaml.org,2002:merge"

KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Source:
    """Where a value was set: file (or ``--set``/``env:X``), 1-based line and column, and
    the origin shown by ``config show`` (``file:PATH:LINE``, ``cli``, ``env:X``, …)."""

    file: str
    line: int | None
    column: int | None
    origin: str


@dataclass
class Layer:
    """Plain data plus the source of every value node and every mapping key in it."""

    data: dict[str, Any] = field(default_factory=dict)
    values: dict[KeyPath, Source] = field(default_factory=dict)
    keys: dict[KeyPath, Source] = field(default_factory=dict)

    def locate(self, path: KeyPath, *, key: bool = False) -> Source:
        """The source of ``path`` (its key when ``key``), else of its nearest known ancestor,
        else a ``default`` source with no file position."""
        if key and path in self.keys:
            return self.keys[path]
        for i in range(len(path), -1, -1):
            if path[:i] in self.values:
                return self.values[path[:i]]
        return Source("<config>", None, None, "default")


def merge_layers(base: Layer, top: Layer, replaced: frozenset[KeyPath] = frozenset()) -> Layer:
    """``top`` over ``base``: mappings merge key by key; anything else, and the mappings at
    the paths in ``replaced``, is replaced whole, dropping ``base``'s sources below it."""
    roots: set[KeyPath] = set()

    def merge(low: dict[str, Any], high: dict[str, Any], path: KeyPath) -> dict[str, Any]:
        out = dict(low)
        for key, value in high.items():
            sub = (*path, key)
            if isinstance(value, dict) and isinstance(out.get(key), dict) and sub not in replaced:
                out[key] = merge(out[key], value, sub)
            else:
                out[key] = value
                roots.add(sub)
        return out

    data = merge(base.data, top.data, ())

    def kept(path: KeyPath) -> bool:
        return not any(path[:i] in roots for i in range(1, len(path) + 1))

    return Layer(
        data,
        {p: s for p, s in base.values.items() if kept(p)} | top.values,
        {p: s for p, s in base.keys.items() if kept(p)} | top.keys,
    )


def dotted(path: KeyPath) -> str:
    """``("retry", "rules", 0, "class")`` → ``retry.rules[0].class``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


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


# quoted strings and comments, whose brackets do not nest anything
_NOT_BRACKETS = re.compile(r"'(?:[^'\n]|'')*'|\"(?:[^\"\\\n]|\\.)*\"|#[^\n]*")
_BRACKET = re.compile(r"[\[\]{}]")


def _check_flow_depth(text: str, file: str) -> None:
    """Refuse flow collections (``[[[…``, ``{a: {…``) nested deeper than MAX_DEPTH
    before the parser sees them: its scanner reads a flow collection's opening brackets
    ahead, in quadratic time, before the first event comes out."""
    depth = 0
    for match in _BRACKET.finditer(_NOT_BRACKETS.sub(lambda m: " " * len(m[0]), text)):
        depth += 1 if match[0] in "[{" else -1
        if depth > MAX_DEPTH:
            line = text.count("\n", 0, match.start()) + 1
            col = match.start() - text.rfind("\n", 0, match.start())
            raise _fail(
                file, f"lists and mappings nested more than {MAX_DEPTH} deep: refused", line, col
            )


def _compose(text: str, file: str) -> Node | None:
    """The node graph of one YAML 1.2 document, after the safety checks (ConfigError)."""
    _check_flow_depth(text, file)
    yaml = YAML(typ="rt")
    aliases = depth = 0
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
                depth += isinstance(event, CollectionStartEvent)
                depth -= isinstance(event, CollectionEndEvent)
                if depth > MAX_DEPTH:
                    message = f"lists and mappings nested more than {MAX_DEPTH} deep: refused"
                    raise _fail(file, message, line, col)
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
    value = None if root is None else _build(root, (), Layer(), problems, source, "cli")
    if problems:
        raise ConfigError(problems)
    if isinstance(value, str) and not text.strip().startswith(("'", '"')):
        return text.strip()  # a plain scalar: keep what follows a " #" or spans lines
    return value


def _read_text(text: str, file: str, kind: str, problems: list[ConfigProblem]) -> Layer:
    """Parse one job or user file into a layer. Duplicate keys are added to ``problems``
    (the first value is kept, so validation goes on); other problems raise ConfigError."""
    root = _compose(text, file)
    if root is None:
        return Layer(values={(): Source(file, 1, 1, f"{kind}:{file}:1")})
    if not isinstance(root, MappingNode):
        raise _fail(file, "expected a mapping of keys (name: …, handler: …, input: …)", 1, 1)
    layer = Layer()
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
    node: Node, path: KeyPath, layer: Layer, problems: list[ConfigProblem], file: str, kind: str
) -> Any:
    mark = node.start_mark
    src = Source(file, mark.line + 1, mark.column + 1, f"{kind}:{file}:{mark.line + 1}")
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
        layer.keys[(*path, key)] = Source(*where, src.origin)
        out[key] = _build(value_node, (*path, key), layer, problems, file, kind)
    return out


def read_file(path: Path, shown: str, kind: str, problems: list[ConfigProblem]) -> Layer:
    """Read one job (``kind="file"``) or user (``kind="user"``) file, named ``shown`` in
    problems and origins, into a layer whose data is a mapping.

    Duplicate keys and non-scalar keys are appended to ``problems`` (the first value is
    kept); an unreadable, oversized, non-UTF-8 or non-YAML file, a refused construct and a
    document that is not a mapping raise ConfigError.
    """
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError([ConfigProblem(shown, None, None, "", "file over 1 MiB: refused")])
        raw = path.read_bytes()[: MAX_FILE_BYTES + 1]
    except OSError as exc:
        message = f"cannot read the file ({exc.strerror or exc}): check the path"
        raise ConfigError([ConfigProblem(shown, None, None, "", message)]) from None
    # the file may have grown between stat and read: check what was actually read
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError([ConfigProblem(shown, None, None, "", "file over 1 MiB: refused")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        message = f"not UTF-8 text (byte {exc.start}): save the file as UTF-8"
        raise ConfigError([ConfigProblem(shown, None, None, "", message)]) from None
    return _read_text(text, shown, kind, problems)
