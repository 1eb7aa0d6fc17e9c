"""The split's inputs and outputs as plain data.

:class:`SplitSpec` is what the split and the worker's reader need from the job config (the
config module builds it); :class:`SplitResult` is what :func:`~shardflow.split.plan.split_input`
returns for the coordinator to persist; :class:`Record` is what the reader yields per item.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from shardflow.models import Batch

FORMATS = frozenset({"jsonl", "csv", "parquet"})
COMPRESSIONS = frozenset({"auto", "none", "gzip", "zstd"})
#: how much of a rejected line is kept in its reject entry (characters)
REJECT_TEXT_CHARS = 200


@dataclass(frozen=True)
class SplitSpec:
    """How to read and batch the input.

    ``paths`` are local paths, globs, ``file://`` or registered-scheme URLs (``s3://``).
    ``format`` None means: from each file's name. ``encoding`` applies to CSV; JSONL is
    always UTF-8. ``batch_function`` is ``"module:fn"`` with
    ``fn(records_in_batch, bytes_in_batch, line) -> bool`` (True cuts before this record);
    it takes precedence over ``batch_bytes``, which takes precedence over ``batch_records``.
    """

    paths: tuple[str, ...]
    format: str | None = None
    compression: str = "auto"
    id_field: str | None = None
    max_record_bytes: int = 1 << 20
    csv_delimiter: str = ","
    csv_quotechar: str = '"'
    csv_header: bool = True
    encoding: str = "utf-8"
    batch_records: int | None = 10_000
    batch_bytes: int | None = None
    batch_function: str | None = None


@dataclass(frozen=True)
class InputInfo:
    """One input file as the split saw it; ``sha256`` is None when it was not read whole."""

    url: str
    size: int
    mtime: float
    sha256: str | None = None


@dataclass(frozen=True)
class SplitResult:
    """The split plan.

    ``records`` counts the items to process (duplicates excluded); ``rejected`` counts
    every reject entry written, duplicates included; ``duplicates`` counts the later
    occurrences of repeated keys. ``reject_keys`` are the store keys of the rejects parts.
    """

    batches: tuple[Batch, ...]
    records: int
    rejected: int
    duplicates: int
    duplicate_examples: tuple[str, ...]
    inputs: tuple[InputInfo, ...]
    reject_keys: tuple[str, ...]


class Record(NamedTuple):
    """One item of a batch as the reader yields it.

    ``ordinal`` is batch-relative (0-based), ``line`` the 1-based line (or row) number in the
    source. A record that could not be parsed has ``value=None``, the reason in ``error`` and
    the start of its text in ``raw``.
    """

    ordinal: int
    line: int
    value: dict[str, Any] | None
    error: str | None
    raw: str | None
