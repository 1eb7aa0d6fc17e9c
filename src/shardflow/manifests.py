"""Job, task, result, retry, output and split manifests; checksums.

A manifest is a JSON document with ``kind``, ``schema_version`` and ``checksum``: the
SHA-256 (hex) of the canonical JSON (orjson, sorted keys, compact) of the document
*without* ``checksum``. The checksum covers content, not formatting, so a manifest stays
valid however it is re-indented; it catches a torn or corrupted write, not a forger.

:func:`decode_manifest` is strict: it raises :class:`~shardflow.errors.ManifestError`
naming the manifest for bad JSON, another kind, another schema version, a checksum that
fails, an unknown or missing field, a value of the wrong type, or an invalid id
(``job_id``, ``task_id``, ``batch_id`` are checked with :func:`shardflow.layout.validate_id`).
:func:`encode_manifest` applies the same checks before writing, so what it writes decodes.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import io
import math
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar, TypeVar

import orjson

from shardflow.errors import InvalidIdError, ManifestError
from shardflow.layout import validate_id
from shardflow.models import SCHEMA_VERSION, Batch, ErrorClass

if TYPE_CHECKING:
    from typing_extensions import Buffer  # collections.abc.Buffer from Python 3.12

_CHUNK = 1 << 20
_ID_FIELDS = frozenset({"job_id", "task_id", "batch_id"})
_HEADER = ("kind", "schema_version", "checksum")

M = TypeVar("M")


@dataclass(frozen=True, slots=True)
class InputChecksum:
    """One input file as seen at submit: a re-run refuses an input that changed."""

    url: str
    size: int
    mtime: float
    sha256: str | None = None


@dataclass(frozen=True, slots=True)
class JobManifest:
    KIND: ClassVar[str] = "job"
    job_id: str
    name: str
    created_at: float
    config: dict[str, Any]
    inputs: tuple[InputChecksum, ...]
    schema_version: int = SCHEMA_VERSION


@dataclass(frozen=True, slots=True)
class TaskManifest:
    """``tasks/part-NNNNNN.json``: the batches of a run of tasks registered and dispatched
    together (see :mod:`shardflow.catalog`); each batch's task is ``t`` + its number."""

    KIND: ClassVar[str] = "task"
    job_id: str
    part: int
    batches: tuple[Batch, ...]


@dataclass(frozen=True, slots=True)
class ResultMarker:
    """The ``.done`` marker: the winning attempt of a task and what it wrote."""

    KIND: ClassVar[str] = "result"
    job_id: str
    task_id: str
    attempt: int
    owner: str
    created_at: float
    result_key: str
    result_sha256: str
    result_size: int
    rows: int
    failures_key: str | None
    failures_sha256: str | None
    failures_size: int
    items_total: int
    items_succeeded: int
    items_failed: int
    items_rejected: int
    columns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RetryManifest:
    KIND: ClassVar[str] = "retry"
    job_id: str
    task_id: str
    attempt: int
    error_class: ErrorClass
    message: str
    not_before: float
    created_at: float


@dataclass(frozen=True, slots=True)
class OutputFile:
    key: str
    sha256: str
    size: int
    rows: int


@dataclass(frozen=True, slots=True)
class OutputManifest:
    """``output/_MANIFEST.json``; ``schema`` is (column, type) in column order."""

    KIND: ClassVar[str] = "output"
    job_id: str
    created_at: float
    format: str
    files: tuple[OutputFile, ...]
    rows: int
    failures: int
    rejects: int
    items_total: int
    schema: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class SplitPlan:
    """``split/_DONE.json``: what the split made, written last; its batches are in the
    ``parts`` task manifests."""

    KIND: ClassVar[str] = "split"
    job_id: str
    created_at: float
    batches: int
    parts: int
    records: int
    rejected: int
    duplicates: int
    inputs: tuple[InputChecksum, ...]


MANIFEST_TYPES: tuple[type[Any], ...] = (
    JobManifest,
    TaskManifest,
    ResultMarker,
    RetryManifest,
    OutputManifest,
    SplitPlan,
)


class _Invalid(Exception):
    """A value that does not fit its declared type; turned into ManifestError."""


def _kind(cls: type[Any]) -> str:
    if cls not in MANIFEST_TYPES:
        raise TypeError(f"{cls.__name__} is not a manifest type")
    kind: str = cls.KIND
    return kind


_HINTS: dict[type[Any], dict[str, Any]] = {}


def _hints(cls: type[Any]) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _fail(where: str, expected: str, value: object) -> _Invalid:
    return _Invalid(f"{where}: expected {expected}, got {type(value).__name__} {value!r:.60}")


def _scalar(tp: Any, value: Any, where: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise _fail(where, "a finite number", value)
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            if where.rpartition(".")[2] in _ID_FIELDS:
                try:
                    validate_id(value, where)
                except InvalidIdError as exc:
                    raise _Invalid(str(exc)) from exc
            return value
    else:
        raise TypeError(f"manifests cannot hold {tp!r}")
    raise _fail(where, tp.__name__, value)


_SHAPES: dict[Any, tuple[Any, tuple[Any, ...]]] = {}


def _shape(tp: Any) -> tuple[Any, tuple[Any, ...]]:
    """``typing.get_origin`` and ``get_args`` of ``tp``, remembered (every field of
    every manifest decoded asks again)."""
    shape = _SHAPES.get(tp)
    if shape is None:
        shape = _SHAPES[tp] = (typing.get_origin(tp), typing.get_args(tp))
    return shape


def _convert(tp: Any, value: Any, where: str, *, decoding: bool) -> Any:
    """``value`` checked against ``tp``: JSON form → model (decoding) or back."""
    if tp is Any:
        return value
    if tp is int or tp is float or tp is bool or tp is str:
        return _scalar(tp, value, where)
    origin, type_args = _shape(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in type_args if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, where, decoding=decoding)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise _fail(where, "a list", value)
        item_types = type_args
        types_ = [item_types[0]] * len(value) if item_types[-1] is Ellipsis else list(item_types)
        if len(types_) != len(value):
            raise _fail(where, f"{len(types_)} items", value)
        items = [
            _convert(t, v, f"{where}[{i}]", decoding=decoding)
            for i, (t, v) in enumerate(zip(types_, value, strict=True))
        ]
        return tuple(items) if decoding else items
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise _fail(where, "an object with string keys", value)
        (_key_type, value_type) = type_args
        return {
            k: _convert(value_type, v, f"{where}.{k}", decoding=decoding) for k, v in value.items()
        }
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _from_fields(tp, value, where) if decoding else _to_fields(tp, value, where)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            member = value if isinstance(value, tp) else tp(value)
        except ValueError as exc:
            raise _fail(where, f"one of {[m.value for m in tp]}", value) from exc
        return member if decoding else member.value
    return _scalar(tp, value, where)


def _to_fields(cls: type[Any], obj: Any, where: str) -> dict[str, Any]:
    if not isinstance(obj, cls):
        raise _fail(where, cls.__name__, obj)
    hints = _hints(cls)
    return {
        f.name: _convert(hints[f.name], getattr(obj, f.name), f"{where}.{f.name}", decoding=False)
        for f in dataclasses.fields(cls)
    }


def _from_fields(cls: type[Any], data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise _fail(where, "an object", data)
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise _Invalid(f"{where}: unknown fields {unknown}")
    missing = sorted(
        name
        for name, f in fields.items()
        if name not in data
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    )
    if missing:
        raise _Invalid(f"{where}: missing fields {missing}")
    kwargs = {
        name: _convert(hints[name], value, f"{where}.{name}", decoding=True)
        for name, value in data.items()
    }
    return cls(**kwargs)


def _canonical(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def encode_manifest(manifest: object) -> bytes:
    """The manifest as JSON bytes (sorted keys, indented) with ``kind``,
    ``schema_version`` and ``checksum``. Raises ManifestError for a value that the
    declared types refuse, and TypeError for an object that is not a manifest."""
    cls = type(manifest)
    kind = _kind(cls)
    try:
        body = _to_fields(cls, manifest, cls.__name__)
        body["kind"] = kind
        body.setdefault("schema_version", SCHEMA_VERSION)
        checksum = hashlib.sha256(_canonical(body)).hexdigest()
        return orjson.dumps(
            {**body, "checksum": checksum},
            option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE,
        )
    except (_Invalid, orjson.JSONEncodeError) as exc:
        raise ManifestError(f"cannot encode {cls.__name__}: {exc}") from exc


def decode_manifest(data: bytes, cls: type[M], *, name: str) -> M:
    """The manifest of type ``cls`` in ``data``; ManifestError naming ``name`` unless
    the document parses, is of ``cls``'s kind and schema version, and its checksum holds."""
    kind = _kind(cls)
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ManifestError(f"{name}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise ManifestError(f"{name}: expected a JSON object")
    if doc.get("kind") != kind:
        raise ManifestError(f"{name}: a {doc.get('kind')!r} manifest, expected {kind!r}")
    version = doc.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise ManifestError(
            f"{name}: schema_version {version!r} is not supported (this shardflow reads "
            f"{SCHEMA_VERSION})"
        )
    stored = doc.pop("checksum", None)
    actual = hashlib.sha256(_canonical(doc)).hexdigest()
    if stored != actual:
        raise ManifestError(f"{name}: checksum mismatch (stored {stored!r}, computed {actual})")
    field_names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    body = {k: v for k, v in doc.items() if k not in _HEADER or k in field_names}
    try:
        result: M = _from_fields(cls, body, cls.__name__)
    except _Invalid as exc:
        raise ManifestError(f"{name}: {exc}") from exc
    return result


def sha256_bytes(data: bytes) -> str:
    """SHA-256 of ``data``, as lowercase hex."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """SHA-256 of the file at ``path``, read in 1 MiB chunks, as lowercase hex."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class HashingWriter(io.RawIOBase):
    """A write-only binary stream that computes SHA-256 and size of what passes through.

    Wraps a buffered binary file opened for writing (``open(p, "wb")``, or use
    :meth:`open`); ``close`` closes it too. For pyarrow, pass ``pa.PythonFile(writer,
    mode="w")`` (or the writer itself, which pyarrow wraps the same way); pyarrow does not
    close a sink it was given, so close the writer (after :meth:`fsync`) yourself.
    """

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__()
        self._raw = raw
        self._digest = hashlib.sha256()
        self._size = 0

    @classmethod
    def open(cls, path: Path) -> HashingWriter:
        """A writer on a new file at ``path`` (FileExistsError if it exists)."""
        return cls(Path(path).open("xb"))

    @property
    def sha256(self) -> str:
        """SHA-256 (hex) of the bytes written so far."""
        return self._digest.hexdigest()

    @property
    def size(self) -> int:
        """How many bytes were written so far."""
        return self._size

    def writable(self) -> bool:
        return True

    def write(self, data: Buffer, /) -> int:
        """Write all of ``data`` and return its length in bytes."""
        view = memoryview(data).cast("B")
        self._digest.update(view)
        written = 0
        while written < len(view):
            count = self._raw.write(view[written:])
            if not count:
                raise OSError(f"short write to {self._raw!r}")
            written += count
        self._size += written
        return written

    def tell(self) -> int:
        return self._size

    def flush(self) -> None:
        if not self.closed:
            self._raw.flush()

    def fsync(self) -> None:
        """Flush and ``fsync`` the underlying file, so its bytes survive a crash."""
        self._raw.flush()
        os.fsync(self._raw.fileno())

    def close(self) -> None:
        if not self.closed:
            try:
                super().close()
            finally:
                self._raw.close()
