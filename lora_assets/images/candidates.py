"""Candidate pairs by Hamming distance of 64-bit hashes, with numpy popcount.

Every pair is compared (block by block, XOR + `np.bitwise_count`), which is exact and needs no
index: about 1e9 pair comparisons a second per hash on one core here, so 20 000 images take
about two seconds for the three hash comparisons, 100 000 about a minute. Beyond that, an index
(multi-index hashing, a BK-tree, a binary FAISS index) is needed; subject folders are far smaller.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BLOCK_ROWS = 64  # small blocks keep the XOR temporaries in cache
# Candidate bars, loose on purpose: verification (similarity.compare) decides. Copies of one
# photo sit within 2 bits of pHash; copies trimmed 3-10 % a side within about 12 of the other's
# centre hash; dHash catches what pHash's median split misses.
PHASH_CANDIDATE = 14
DHASH_CANDIDATE = 10


def hamming_pairs(a: np.ndarray, b: np.ndarray | None, max_distance: int) -> np.ndarray:
    """(i, j) pairs with popcount(a[i] ^ b[j]) <= max_distance; with `b` None, pairs i < j within `a`."""
    a = np.ascontiguousarray(a, dtype=np.uint64)
    other = a if b is None else np.ascontiguousarray(b, dtype=np.uint64)
    found: list[np.ndarray] = []
    for start in range(0, len(a), BLOCK_ROWS):
        block = a[start : start + BLOCK_ROWS]
        offset = start if b is None else 0  # within one set, only the upper triangle
        distance = np.bitwise_count(block[:, None] ^ other[None, offset:])
        rows, cols = np.nonzero(distance <= max_distance)
        rows, cols = rows + start, cols + offset
        if b is None:
            keep = cols > rows
            rows, cols = rows[keep], cols[keep]
        found.append(np.stack([rows, cols], axis=1))
    return np.concatenate(found) if found else np.empty((0, 2), dtype=np.int64)


def candidate_pairs(
    phash: Sequence[int],
    dhash: Sequence[int],
    phash_center: Sequence[int],
    crop_tolerant: bool,
    phash_mirror: Sequence[int] = (),
    phash_strip: Sequence[int] = (),
) -> list[tuple[int, int]]:
    """Sorted unique (i, j), i < j, worth verifying: close hashes, close once one is mirrored, or
    close once a caption strip is left out of either."""
    p = np.array(phash, dtype=np.uint64)
    parts = [
        hamming_pairs(p, None, PHASH_CANDIDATE),
        hamming_pairs(np.array(dhash, dtype=np.uint64), None, DHASH_CANDIDATE),
    ]
    if len(phash_mirror):
        parts.append(hamming_pairs(p, np.array(phash_mirror, dtype=np.uint64), PHASH_CANDIDATE))
    if len(phash_strip):
        strip = np.array(phash_strip, dtype=np.uint64)
        changed = np.flatnonzero(strip != p)  # only images that have a strip add pairs
        if len(changed):
            found = hamming_pairs(strip[changed], strip, PHASH_CANDIDATE)
            parts.append(np.stack([changed[found[:, 0]], found[:, 1]], axis=1))
    if crop_tolerant:
        center = np.array(phash_center, dtype=np.uint64)
        parts.append(hamming_pairs(p, center, PHASH_CANDIDATE))
    pairs = np.concatenate(parts)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    pairs = np.sort(pairs, axis=1)
    return [(int(i), int(j)) for i, j in np.unique(pairs, axis=0)]
