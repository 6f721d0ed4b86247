"""The selections of one (layer, kind) over a whole trace, kept for policies that need the future
(Belady) and for replaying one layer's masks at several capacities.

They are kept as a bitmap, unit-major (a unit's row: one bit per token), cut into chunks of
``chunk`` tokens: chunk c is one record of U x (chunk / 64 + 1) uint64 words, the unit rows of its
bits followed by each unit's first use after the chunk (filled by one backward pass, ``finalize``).
Replay then takes the chunks in order and rebuilds each one's selections as the CSR index lists
and next-use times that ``kernels.replay_masks_at`` runs, with the cache state carried from chunk to
chunk: the bits of a unit's row give its next use directly (the next set bit), so no pass over the
whole trace's index lists is needed, and nothing is as long as the trace but the bitmap (and the
per-token outputs, 24 bytes a token).

Memory: the bitmap holds ``ceil(T / chunk) * U * (chunk / 64 + 1) * 8`` bytes, about
U * T / 8 * (1 + 64 / chunk): 0.156 U T bytes at the default 256-token chunk, whatever the number k
of units selected per token (the whole trace's index lists took 8 k T: 4 bytes for each selected
unit's index and 4 for its next use; 20x more than the bitmap at k = 0.4 U, 36x at k = 0.7 U, dip's
input and down kinds at density 0.5). While one chunk is replayed, its index lists add 8 bytes per
selected unit of that chunk (at most 8 U ``chunk``) and its token-major copy U ``chunk`` / 8 bytes.
A bitmap larger than ``spill_bytes`` lives in a file of a temporary directory instead, written and
read one record at a time with ordinary file I/O, so the process then holds O(U * chunk) bytes for
it (the file's pages are the OS's page cache, not the process's resident memory); the directory is
removed by :meth:`MaskStore.close` or when the store is garbage-collected.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from simcore.engine import kernels as K

CHUNK_TOKENS = 256
"""Tokens per chunk, a multiple of 64 (one bitmap word): replay rebuilds one chunk's index lists at a time."""
SPILL_BYTES = 256 * 2**20
"""A bitmap larger than this (bytes, per (layer, kind)) is kept in a temporary file."""


class MaskStore:
    """The selections of tokens [0, T) of one unit kind with U = ``n_units`` units, as bitmaps.

    Fill with :meth:`spans` and :meth:`bits` (``kernels.mask_bits_batch`` writes the bits), then
    :meth:`finalize` once all tokens are in, then read with :meth:`chunks`. Tokens never written
    select nothing.
    """

    def __init__(self, n_units: int, T: int, chunk: int = CHUNK_TOKENS, spill_bytes: int = SPILL_BYTES):
        if chunk <= 0 or chunk % 64:
            raise ValueError(f"chunk must be a positive multiple of 64 tokens, got {chunk}")
        self.n, self.T, self.chunk = n_units, T, chunk
        self.words = chunk // 64
        self.n_chunks = -(-T // chunk)
        self.record_words = n_units * (self.words + 1)
        self.nbytes = self.n_chunks * self.record_words * 8
        self.on_disk = self.nbytes > spill_bytes
        self.finalized = False
        self._closed = False
        if self.on_disk:
            self._dir = tempfile.TemporaryDirectory(prefix="simcore-masks-", ignore_cleanup_errors=True)
            self._file = open(os.path.join(self._dir.name, "masks.bin"), "w+b")  # closed in close()
            self._file.truncate(self.nbytes)  # reads as zeros: no unit selected
            self._buf = np.zeros(self.record_words, np.uint64)
            self._cur = -1  # the chunk whose record _buf holds
            self._dirty = False
        else:
            self._all = np.zeros((self.n_chunks, self.record_words), np.uint64)  # pages appear when written

    def _split(self, rec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A record's bits (uint64[U, W]) and first uses after its chunk (int64[U]), as views."""
        cut = self.n * self.words
        return rec[:cut].reshape(self.n, self.words), rec[cut:].view(np.int64)

    def _record(self, c: int) -> np.ndarray:
        if not self.on_disk:
            return self._all[c]
        if c != self._cur:
            self._flush()
            self._file.seek(c * self.record_words * 8)
            self._file.readinto(memoryview(self._buf).cast("B"))
            self._cur = c
        return self._buf

    def _flush(self) -> None:
        if self.on_disk and self._dirty:
            self._file.seek(self._cur * self.record_words * 8)
            self._file.write(memoryview(self._buf).cast("B"))
            self._dirty = False

    def spans(self, t0: int, nb: int):
        """The parts of tokens [t0, t0 + nb) inside one chunk each: (chunk c, position of the part's
        first token in the chunk, [a, b) the part's rows of the batch)."""
        a = 0
        while a < nb:
            c, j0 = divmod(t0 + a, self.chunk)
            b = min(nb, a + self.chunk - j0)
            yield c, j0, a, b
            a = b

    def bits(self, c: int) -> np.ndarray:
        """Chunk c's bitmap, uint64[U, chunk / 64], to be written (before :meth:`finalize`)."""
        if self.finalized or self._closed:
            raise RuntimeError("the masks are finalized or closed; no more tokens can be added")
        rec = self._record(c)
        self._dirty = True
        return self._split(rec)[0]

    def finalize(self) -> None:
        """One backward pass over the chunks: each record receives every unit's first use after its
        chunk (T if none). Idempotent."""
        if self.finalized:
            return
        self._check_open()
        self._flush()
        first = np.full(self.n, self.T, np.int64)
        for c in range(self.n_chunks - 1, -1, -1):
            bits, after = self._split(self._record(c))
            K.first_uses(bits, c * self.chunk, after, first)
            if self.on_disk:  # write back the first uses only
                self._file.seek((c * self.record_words + self.n * self.words) * 8)
                self._file.write(memoryview(after).cast("B"))
        self.finalized = True

    def chunks(self, used: np.ndarray):
        """The selections chunk by chunk, in order: (c0, idx, ptr, nxt) for tokens [c0, c0 + C), with
        ``idx``/``ptr`` their CSR (int32 unit indices ascending per token, int64[C + 1] offsets from 0)
        and ``nxt`` (int32, one per access) the next token using the unit, or T if none: equal, chunk
        for chunk, to ``kernels.next_use_times`` over the whole trace's CSR. ``used`` (int32[T]) gives
        the selection sizes. The arrays are reused from one chunk to the next."""
        if not self.finalized:
            raise RuntimeError("finalize() the masks before reading them")
        self._check_open()
        if self.n_chunks == 0:
            return
        starts = np.arange(0, self.T, self.chunk)
        sizes = np.add.reduceat(np.asarray(used[: self.T], np.int64), starts)
        most = int(sizes.max())
        idx, nxt = np.empty(most, np.int32), np.empty(most, np.int32)
        ptr = np.zeros(self.chunk + 1, np.int64)
        by_token = np.empty((self.chunk, -(-self.n // 64)), np.uint64)
        for c, c0 in enumerate(starts):
            c1 = min(c0 + self.chunk, self.T)
            p = ptr[: c1 - c0 + 1]
            np.cumsum(used[c0:c1], out=p[1:])
            bits, after = self._split(self._record(c))
            K.masks_of_chunk(bits, after, c0, p, idx, nxt, by_token)
            yield int(c0), idx[: p[-1]], p, nxt[: p[-1]]

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the masks are closed")

    def close(self) -> None:
        """Release the bitmap (and remove its file). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.on_disk:
            self._file.close()
            self._dir.cleanup()
        else:
            self._all = np.zeros((0, self.record_words), np.uint64)
