import numpy as np

from lora_assets.images.candidates import candidate_pairs, hamming_pairs
from lora_assets.images.grouping import group_items


def test_hamming_pairs_finds_exactly_the_close_pairs():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, 300, dtype=np.int64).astype(np.uint64)
    hashes[7] = hashes[3] ^ np.uint64(0b1011)  # 3 bits from item 3
    pairs = {tuple(p) for p in hamming_pairs(hashes, None, 4).tolist()}
    brute = {
        (i, j)
        for i in range(300)
        for j in range(i + 1, 300)
        if int(np.bitwise_count(hashes[i] ^ hashes[j])) <= 4
    }
    assert pairs == brute and (3, 7) in pairs


def test_candidates_include_crops_through_the_centre_hash():
    a, b, c = 0x0F0F_0F0F_0F0F_0F0F, 0xF0F0_F0F0_F0F0_F0F0, 0x3333_CCCC_3333_CCCC
    phash, dhash = [a, b, c], [a, b, c]
    d, e = 0x5A5A_A5A5_5A5A_A5A5, 0x6996_9669_6996_9669
    centre = [d, a ^ 0b111, e]  # photo 1's centre looks like photo 0: 1 is a trimmed copy of 0
    assert candidate_pairs(phash, dhash, centre, crop_tolerant=False) == []
    assert candidate_pairs(phash, dhash, centre, crop_tolerant=True) == [(0, 1)]


def test_grouping_needs_every_member_to_match_every_other():
    # 0~1, 1~2 but not 0~2: a chain, which single linkage would merge.
    groups = group_items([0, 1, 2], {(0, 1): "duplicate", (1, 2): "duplicate"})
    assert sorted(map(sorted, groups)) == [[0, 1], [2]]
    # Everyone matches everyone: one group; "similar" links only when accepted.
    full = {(0, 1): "duplicate", (0, 2): "duplicate", (1, 2): "similar"}
    assert sorted(map(sorted, group_items([0, 1, 2], full))) == [[0, 1], [2]]
    assert group_items([0, 1, 2], full, accept=("duplicate", "similar")) == [[0, 1, 2]]
