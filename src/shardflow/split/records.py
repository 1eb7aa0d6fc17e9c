"""What counts as a record, and why a line is rejected: one set of rules for split and reader.

The split rejects a line for reasons it can see cheaply (too long, not UTF-8, wrong CSV
column count, and, when keys are needed, bad JSON); the reader applies the same rules so
that both give every record the same ordinal. Blank lines are never records and never
rejects, but they keep their line numbers.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from itertools import islice
from typing import Any, NamedTuple

import orjson

from shardflow.errors import InputError
from shardflow.split.formats import LineBlock, block_spans
from shardflow.split.spec import REJECT_TEXT_CHARS, SplitSpec


def too_long(size: int, limit: int) -> str:
    return f"record is {size} bytes, over max_record_bytes {limit}"


def excerpt(raw: bytes | str) -> str:
    """The start of a rejected line, for humans (invalid bytes replaced)."""
    if isinstance(raw, bytes):
        raw = raw[: REJECT_TEXT_CHARS * 4].decode("utf-8", "replace")
    return raw[:REJECT_TEXT_CHARS]


def utf8_error(raw: bytes) -> str | None:
    """None if ``raw`` is valid UTF-8, else the reject reason."""
    try:
        raw.decode()
    except UnicodeDecodeError as exc:
        return f"invalid UTF-8 at byte {exc.start}"
    return None


def lines_are_utf8(lines: list[bytes]) -> bool:
    """Whether every line is valid UTF-8; pure ASCII (the common case) is checked in C."""
    if all(map(bytes.isascii, lines)):
        return True
    try:
        b"\n".join(lines).decode()
    except UnicodeDecodeError:
        return False
    return True


def parse_object(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """``(value, None)`` for a JSON object, else ``(None, reason)``."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return None, utf8_error(raw) or f"invalid JSON: {exc}"
    if type(value) is not dict:
        return None, f"JSON {type(value).__name__} is not an object"
    return value, None


def key_of(value: Any, id_field: str) -> tuple[str | None, str | None]:
    """``(key, None)`` for a usable id (a non-empty string or an int), else ``(None, reason)``."""
    key = value.get(id_field)
    if type(key) is str:
        if key:
            return key, None
        return None, f"empty id field {id_field!r}"
    if type(key) is int:
        return str(key), None
    if key is None:
        return None, f"missing id field {id_field!r}"
    return None, f"id field {id_field!r} is {type(key).__name__}, not a string or an integer"


def jsonl_line(
    raw: bytes, spec: SplitSpec, *, parse: bool
) -> tuple[dict[str, Any] | None, str | None, str | None]:
    """Classify one JSONL line: ``(value, key, reason)``.

    ``reason == ""`` means blank (not a record, not a reject). Without ``parse`` only the
    cheap checks run and ``value`` is None for a record.
    """
    if len(raw) > spec.max_record_bytes:
        return None, None, too_long(len(raw), spec.max_record_bytes)
    if not parse:
        if raw.isspace() or not raw:
            return None, None, ""
        return None, None, utf8_error(raw)
    value, reason = parse_object(raw)
    if value is None:
        return None, None, "" if raw.isspace() or not raw else reason
    if spec.id_field is None:
        return value, None, None
    key, reason = key_of(value, spec.id_field)
    return value, key, reason


# CSV ------------------------------------------------------------------------------------

#: unit flags: a whole record, one over max_record_bytes, one whose quote never closed
UNIT_OK, UNIT_TOO_LONG, UNIT_UNTERMINATED = 0, 1, 2


class CsvUnit(NamedTuple):
    """One CSV record's bytes (its lines joined by ``\\n``, no final newline)."""

    raw: bytes
    span: int
    nlines: int
    flag: int


class CsvGrouper:
    """Groups physical lines into CSV records: a record ends at a newline outside quotes.

    A quote opens a quoted field only at the start of a field, as the csv module reads it
    (elsewhere it is a plain character); a doubled quote inside a quoted field is one
    quote. Lines without quotes, and lines that are a row of well-formed fields, are
    decided in C; only the others are walked field by field. A record that grows over
    ``max_bytes`` before its quote closes is cut there and reported too long, so one
    unclosed quote cannot swallow the rest of the file.
    """

    def __init__(self, spec: SplitSpec) -> None:
        self._quote = spec.csv_quotechar.encode(spec.encoding)
        self._delim = spec.csv_delimiter.encode(spec.encoding)
        q, d = re.escape(self._quote), re.escape(self._delim)
        field = rb"(?:%s(?:[^%s]|%s%s)*%s|[^%s%s]*)" % (q, q, q, q, q, q, d)
        self._closed_row = re.compile(rb"%s(?:%s%s)*\r?" % (field, d, field))
        self._max = spec.max_record_bytes
        self._pending: list[bytes] = []
        self._pending_span = 0
        self._pending_size = 0

    def ends_in_quotes(self, line: bytes, in_quotes: bool) -> bool:
        """Whether a line that starts inside (or outside) a quoted field ends inside one."""
        quote, delim = self._quote, self._delim
        i, n, at_start = 0, len(line), not in_quotes
        while i < n:
            if in_quotes:
                j = line.find(quote, i)
                if j < 0:
                    return True
                if line.startswith(quote, j + 1):
                    i = j + 2  # a doubled quote is a quote character
                    continue
                in_quotes, at_start, i = False, False, j + 1
            elif at_start and line.startswith(quote, i):
                in_quotes, i = True, i + 1
            else:
                j = line.find(delim, i)
                if j < 0:
                    return False
                at_start, i = True, j + 1
        return in_quotes

    def feed(self, block: LineBlock) -> list[CsvUnit]:
        units: list[CsvUnit] = []
        spans = block_spans(block)
        if block.overlong >= 0:
            units.extend(self._flush(UNIT_TOO_LONG, extra=(block.lines[0], spans[0])))
            return units
        quote, closed_row = self._quote, self._closed_row.fullmatch
        pending = self._pending
        for line, span in zip(block.lines, spans, strict=True):
            if pending:
                pending.append(line)
                self._pending_span += span
                self._pending_size += len(line) + 1
                if not self.ends_in_quotes(line, True):
                    units.append(self._take(UNIT_OK))
                elif self._pending_size > self._max:
                    units.append(self._take(UNIT_TOO_LONG))
            elif quote not in line or closed_row(line) or not self.ends_in_quotes(line, False):
                units.append(CsvUnit(line, span, 1, UNIT_OK))
            else:
                pending.append(line)
                self._pending_span, self._pending_size = span, len(line)
        return units

    def finish(self) -> list[CsvUnit]:
        """The unterminated record left at the end of the stream, if any."""
        return self._flush(UNIT_UNTERMINATED)

    def _take(self, flag: int) -> CsvUnit:
        unit = CsvUnit(b"\n".join(self._pending), self._pending_span, len(self._pending), flag)
        self._pending.clear()  # in place: feed() holds a reference
        self._pending_span = self._pending_size = 0
        return unit

    def _flush(self, flag: int, extra: tuple[bytes, int] | None = None) -> list[CsvUnit]:
        if extra is not None:
            self._pending.append(extra[0])
            self._pending_span += extra[1]
        return [self._take(flag)] if self._pending else []


_NO_ANSWER: tuple[list[str] | None, str | None] = (None, None)


class CsvDialect:
    """Parses CSV units with the spec's delimiter, quote and encoding."""

    def __init__(self, spec: SplitSpec) -> None:
        try:
            ascii_compatible = '\n,"'.encode(spec.encoding) == b'\n,"'
        except LookupError:
            raise InputError(f"unknown encoding {spec.encoding!r}") from None
        if not ascii_compatible:
            raise InputError(
                f"encoding {spec.encoding!r} is not supported for CSV: use one that keeps "
                "ASCII as is (utf-8, latin-1, cp1252, ...)"
            )
        self.encoding = spec.encoding
        self.max_bytes = spec.max_record_bytes
        self._fmt: dict[str, Any] = {
            "delimiter": spec.csv_delimiter,
            "quotechar": spec.csv_quotechar,
            "doublequote": True,
            "strict": False,
        }

    def parse(self, unit: CsvUnit) -> tuple[list[str] | None, str | None]:
        """``(fields, None)``, ``(None, "")`` for a blank line, or ``(None, reason)``."""
        if unit.flag == UNIT_TOO_LONG or len(unit.raw) > self.max_bytes:
            return None, too_long(max(len(unit.raw), unit.span - 1), self.max_bytes)
        if unit.flag == UNIT_UNTERMINATED:
            return None, "unterminated quoted field"
        try:
            text = unit.raw.decode(self.encoding)
        except UnicodeDecodeError as exc:
            return None, f"cannot decode as {self.encoding} at byte {exc.start}"
        return self.parse_text(text)

    def parse_units(self, units: list[CsvUnit]) -> Iterator[tuple[list[str] | None, str | None]]:
        """:meth:`parse` for each unit, in order, with one csv reader for the whole list.

        Each answer is the one :meth:`parse` gives the unit alone: a unit the bulk reader
        does not read as exactly one row is parsed again on its own.
        """
        prepared: list[tuple[str | None, tuple[list[str] | None, str | None]]] = []
        texts: list[str] = []
        for unit in units:
            if unit.flag == UNIT_OK and len(unit.raw) <= self.max_bytes:
                try:
                    text = unit.raw.decode(self.encoding)
                except UnicodeDecodeError:
                    pass
                else:
                    if text and not text.isspace():
                        prepared.append((text, _NO_ANSWER))
                        texts.append(text)
                        continue
            prepared.append((None, self.parse(unit)))
        rows = self._rows(texts)
        for bulk, answer in prepared:
            yield next(rows) if bulk is not None else answer

    def _rows(self, texts: list[str]) -> Iterator[tuple[list[str] | None, str | None]]:
        start = 0
        while start < len(texts):
            reader = csv.reader(islice(texts, start, None), **self._fmt)
            k = 0
            try:
                for row in reader:
                    if reader.line_num != k + 1:
                        break  # the row took more than one text: answer it alone
                    yield row, None
                    k += 1
                else:
                    return
            except csv.Error:
                pass
            yield self.parse_text(texts[start + k])
            start += k + 1

    def parse_text(self, text: str) -> tuple[list[str] | None, str | None]:
        if not text or text.isspace():
            return None, ""
        try:
            rows = list(csv.reader((text,), **self._fmt))
        except csv.Error as exc:
            return None, f"malformed CSV: {exc}"
        if len(rows) != 1:
            return None, "malformed CSV: one record parsed as several"
        return rows[0], None


def csv_key(fields: list[str], index: int, id_field: str) -> tuple[str | None, str | None]:
    key = fields[index]
    if not key:
        return None, f"empty id field {id_field!r}"
    return key, None
