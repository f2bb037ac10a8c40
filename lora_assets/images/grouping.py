"""Grouping verified pairs without chaining.

Single-linkage (connected components) merges a burst A~B~C into one group even when A and C
differ, and then drops distinct photos. Here an item joins a group only if it is related to the
group's founder and to every member, so a chain stays split. In a group of three or more, it
may miss up to a quarter of the members (`min_share`): two copies altered in different ways (a
watermarked one and a cropped one) can fail against each other while both match the source.
Pairs the user pinned apart (`apart`) never share a group.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence


def group_items(
    order: Sequence[int],
    related: Mapping[tuple[int, int], str],
    accept: Iterable[str] = ("duplicate",),
    min_share: float = 1.0,
    apart: Collection[frozenset[int]] = frozenset(),
) -> list[list[int]]:
    """Groups (each listed in `order`) of items whose pairwise relations are all in `accept`.

    `order` is the priority in which items may found a group (largest first), `related` maps
    (i, j) with i < j to a relation name. Items in no group come back as singletons.
    """
    accepted = frozenset(accept)
    neighbours: dict[int, set[int]] = {}
    for (i, j), relation in related.items():
        if relation in accepted:
            neighbours.setdefault(i, set()).add(j)
            neighbours.setdefault(j, set()).add(i)
    groups: list[list[int]] = []
    group_of: dict[int, int] = {}
    for item in order:
        links = neighbours.get(item, set())
        best: int | None = None
        for index in sorted({group_of[n] for n in links if n in group_of}):
            group = groups[index]
            if _joins(item, group, links, min_share, apart) and (
                best is None or len(group) > len(groups[best])
            ):
                best = index
        if best is None:
            best = len(groups)
            groups.append([])
        groups[best].append(item)
        group_of[item] = best
    return groups


def _joins(
    item: int, group: list[int], links: set[int], min_share: float, apart: Collection[frozenset[int]]
) -> bool:
    if group[0] not in links or any(frozenset((item, member)) in apart for member in group):
        return False
    if len(group) < 3:
        return all(member in links for member in group)
    return sum(member in links for member in group) >= min_share * len(group)


def components(count: int, links: Iterable[tuple[int, int]]) -> list[list[int]]:
    """Connected components of items 0..count-1 under `links` (union-find): what single-linkage
    tools report as groups, and the clusters whose every pair dedup verifies."""
    parent = list(range(count))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in links:
        parent[root(i)] = root(j)
    members: dict[int, list[int]] = {}
    for i in range(count):
        members.setdefault(root(i), []).append(i)
    return list(members.values())
