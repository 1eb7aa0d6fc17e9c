"""Finding repeated keys in bounded memory.

The split records one 64-bit hash per record (indexed by global ordinal) in fixed-size
``array('q')`` chunks: 8 bytes a record, 80 MB for 10M records. At the end the hashes are
sorted a partition at a time (with pyarrow, so no Python object per record) to find the
hashes seen twice; only the records carrying those hashes are then re-read and their
exact keys compared, so a hash collision can never reject a record wrongly.

Hashes come from Python's ``hash(str)``, which is salted per process: they are never
stored, and the result depends only on the exact keys.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator
from typing import cast

CHUNK_RECORDS = 1 << 20
#: records per partition sorted at once (bounds the sort's extra memory to ~32 MB)
PARTITION_RECORDS = 2 << 20


class KeyIndex:
    """The hash of every record's key, in global ordinal order."""

    def __init__(self) -> None:
        self._chunks: list[array[int]] = [array("q")]
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def extend(self, hashes: Iterable[int]) -> None:
        """Append the hashes of the next records, in ordinal order."""
        pending = list(hashes)
        while pending:
            chunk = self._chunks[-1]
            room = CHUNK_RECORDS - len(chunk)
            if room == 0:
                chunk = array("q")
                self._chunks.append(chunk)
                room = CHUNK_RECORDS
            chunk.extend(pending[:room])
            self._count += min(room, len(pending))
            pending = pending[room:]

    def candidate_ordinals(self) -> Iterator[int]:
        """Ordinals of every record whose key hash is shared with another record, ascending.

        Every repeated key is among them; a few others may be too (hash collisions).
        Ordinals are produced lazily, one chunk at a time.
        """
        import pyarrow as pa
        import pyarrow.compute as pc

        arrays = [
            pa.Array.from_buffers(pa.int64(), len(c), [None, pa.py_buffer(c)])
            for c in self._chunks
            if len(c)
        ]
        partitions = 1
        while partitions * PARTITION_RECORDS < self._count:
            partitions *= 2
        repeated: list[int] = []
        for part in range(partitions):
            if partitions == 1:
                pieces = arrays
            else:
                pieces = [
                    pc.filter(
                        a, pc.equal(pc.bit_wise_and(a, partitions - 1), pa.scalar(part, pa.int64()))
                    )
                    for a in arrays
                ]
            values = pa.concat_arrays(pieces).sort() if pieces else pa.array([], pa.int64())
            if len(values) < 2:
                continue
            same = pc.equal(values[1:], values[:-1])
            repeated.extend(cast(list[int], pc.unique(pc.filter(values[1:], same)).to_pylist()))
            del values, same, pieces
        if not repeated:
            return
        value_set = pa.array(repeated, pa.int64())
        base = 0
        for a in arrays:
            hits = pc.indices_nonzero(pc.is_in(a, value_set=value_set))
            for i in cast(list[int], hits.to_pylist()):
                yield base + i
            base += len(a)
