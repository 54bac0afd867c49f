"""The cold tier: float32 rows read by byte range, only when a search scores on float32;
and the refinement tier (:mod:`squash.fine`), loaded whole and cached, when a search
re-ranks on it.

One range GET per partition per batch: the rows a batch needs from a partition are covered
by one contiguous range of whole CRC blocks (first needed block to last), checked block by
block against the CRCs the hot tier carries. A missing, short or altered file is a corrupt
index (``IndexFormatError``), the same path as a corrupt segment.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from .cache import SegmentCache
from .errors import IndexFormatError
from .fine import Fine, fine_key
from .segment import Segment, cold_key, read_indexed_file
from .storage import Storage


@dataclass
class ColdReads:
    """Counts of what a search read from the cold tier (reported in ``stats``)."""

    gets: int = 0
    bytes: int = 0
    fine_loaded: int = 0  # refinement files read (cache misses)
    fine_bytes: int = 0
    fine_hits: int = 0  # refinement files found in the cache (not reported: hits are segments')

    def as_dict(self) -> dict[str, int]:
        return {
            "refine_gets": self.gets,
            "refine_bytes_read": self.bytes,
            "fine_loaded": self.fine_loaded,
            "fine_bytes_read": self.fine_bytes,
        }


@dataclass
class ColdTier:
    """Reads rows of segments of one index; ``reads`` counts every GET and byte."""

    storage: Storage
    reads: ColdReads = field(default_factory=ColdReads)
    #: where refinement files stay between searches (a worker's or an index's segment cache);
    #: None: a private one for this object's lifetime
    cache: SegmentCache | None = None

    def fine(self, seg: Segment) -> Fine:
        """The refinement of ``seg``, loaded once and then served from the cache."""
        if seg.fine_crc is None:
            raise IndexFormatError(
                f"{seg.key}: built without a refinement file (older squash); rebuild the index "
                'or re-rank with rerank="float32"'
            )
        if self.cache is None:
            self.cache = SegmentCache(1 << 62)
        key = fine_key(seg.key)

        def load() -> Fine:
            data = read_indexed_file(self.storage, key)
            self.reads.fine_loaded += 1
            self.reads.fine_bytes += len(data)
            return Fine.from_bytes(data, seg.size, seg.codes4.shape[1], seg.fine_crc, key)

        fine, hit = self.cache.get_or_load((self.storage.uri, key), load)
        self.reads.fine_hits += int(hit)
        return fine

    def rows(self, seg: Segment, rows: np.ndarray) -> np.ndarray:
        """float32 rows (len(rows), d) of ``seg`` in the rotated space, one range GET."""
        d = seg.dims
        if rows.shape[0] == 0:
            return np.empty((0, d), dtype=np.float32)
        block = seg.cold_block_rows
        first, last = int(rows.min()) // block, int(rows.max()) // block
        row_bytes = 4 * d
        start = first * block * row_bytes
        end = min((last + 1) * block, seg.size) * row_bytes
        key = cold_key(seg.key)
        data = read_indexed_file(self.storage, key, (start, end))
        self.reads.gets += 1
        self.reads.bytes += len(data)
        if len(data) != end - start:
            raise IndexFormatError(f"{key}: shorter than its segment says (corrupt or replaced)")
        step = block * row_bytes
        view = memoryview(data)
        for i, b in enumerate(range(first, last + 1)):
            if zlib.crc32(view[i * step : (i + 1) * step]) != int(seg.cold_crc[b]):
                raise IndexFormatError(f"{key}: rows {b * block}.. fail their checksum (corrupt or replaced)")
        local = np.frombuffer(data, dtype="<f4").reshape(-1, d)
        return local[rows - first * block]
