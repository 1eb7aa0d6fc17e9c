"""Reading verified results and fitting them to one schema.

:func:`read_verified` reads an object once, checks its SHA-256 against the marker that
names it, and decodes the same bytes (Arrow IPC, or Parquet for results of an earlier
shardflow). :func:`unified_schema` is the one rule for schema drift: the declared types
first, then the results' types unified (promoted, never a column dropped), key first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from shardflow.errors import ChecksumMismatchError, SchemaDriftError
from shardflow.objectstore.base import ObjectStore
from shardflow.worker.results import decode_table

if TYPE_CHECKING:
    import pyarrow as pa


def read_verified(store: ObjectStore, key: str, sha256: str | None) -> pa.Table:
    """The table stored at ``key``; :class:`ChecksumMismatchError` when its bytes do not
    match ``sha256``, :class:`~shardflow.errors.NotFoundError` when it is missing."""
    data = store.get_bytes(key)
    if sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise ChecksumMismatchError(f"{key}: sha256 {actual} does not match {sha256}")
    return decode_table(data)


def unified_schema(
    schemas: Sequence[pa.Schema],
    key_column: str | None,
    declared: Mapping[str, str] | None = None,
) -> pa.Schema:
    """One schema for all inputs: the declared types, else the inputs' types unified
    (promoted, never a column dropped), key column first. Raises
    :class:`SchemaDriftError` naming a column whose types cannot be unified."""
    import pyarrow as pa

    declared = declared or {}
    # a declared column takes its declared type whatever the inputs say
    inputs = [
        pa.schema([pa.field(f.name, arrow_type(declared[f.name])) if f.name in declared else f
                   for f in schema])
        for schema in schemas
    ] if declared else list(schemas)  # fmt: skip
    try:
        schema = pa.unify_schemas(inputs, promote_options="permissive") if inputs else None
    except (pa.ArrowTypeError, pa.ArrowInvalid) as exc:
        raise SchemaDriftError(_drift(inputs, exc)) from exc
    fields = list(schema) if schema is not None else []
    if declared:
        fields = [
            pa.field(f.name, arrow_type(declared[f.name])) if f.name in declared else f
            for f in fields
        ]
    if key_column is not None:
        keyed = [f for f in fields if f.name == key_column] or [pa.field(key_column, pa.string())]
        fields = keyed + [f for f in fields if f.name != key_column]
    return pa.schema(fields)


def _drift(schemas: Sequence[pa.Schema], exc: Exception) -> str:
    """Which column's types clash, in words a user can act on."""
    import pyarrow as pa

    seen: dict[str, pa.DataType] = {}
    for schema in schemas:
        for field in schema:
            first = seen.setdefault(field.name, field.type)
            if first == field.type:
                continue
            try:
                pa.unify_schemas(
                    [pa.schema([pa.field("c", first)]), pa.schema([pa.field("c", field.type)])],
                    promote_options="permissive",
                )
            except (pa.ArrowTypeError, pa.ArrowInvalid):
                return (
                    f"task outputs disagree on column {field.name!r}: {first} in some, "
                    f"{field.type} in others; declare its type in output.schema (e.g. "
                    f"output.schema: {{{field.name}: string}}) or make the handler return one type"
                )
    return f"task outputs' schemas cannot be unified ({exc}); declare the types in output.schema"


def fits(schema: pa.Schema, table_schema: pa.Schema, declared: Mapping[str, str]) -> bool:
    """Whether a table of ``table_schema`` goes into ``schema`` as it is, or by a cast
    that loses nothing (a missing column is nulls; a null column takes any type; a
    declared column is cast to its declared type)."""
    import pyarrow as pa

    names = set(schema.names)
    for field in table_schema:
        if field.name not in names:
            return False
        target = schema.field(field.name).type
        if field.type == target or pa.types.is_null(field.type) or field.name in declared:
            continue
        pair = [pa.schema([field]), pa.schema([pa.field(field.name, target)])]
        try:
            promoted = pa.unify_schemas(pair, promote_options="permissive")
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            return False
        if promoted.field(field.name).type != target:
            return False
    return True


def arrow_type(name: str) -> pa.DataType:
    """The Arrow type named by a config alias such as ``int64`` or ``timestamp[us]``."""
    import pyarrow as pa

    return cast(Any, pa).type_for_alias(name)  # type: ignore[no-any-return]


def conform(batch: pa.RecordBatch | pa.Table, schema: pa.Schema) -> pa.Table:
    """``batch`` with ``schema``'s columns, in its order: missing ones as nulls, others
    cast where their type differs."""
    import pyarrow as pa

    columns = []
    for field in schema:
        idx = batch.schema.get_field_index(field.name)
        if idx < 0:
            columns.append(pa.nulls(batch.num_rows, field.type))
            continue
        col = batch.column(idx)
        if col.type != field.type:
            try:
                col = col.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                raise SchemaDriftError(
                    f"column {field.name!r}: a task's {col.type} values cannot be made "
                    f"{field.type} ({exc}); fix the handler or output.schema"
                ) from exc
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=schema)
