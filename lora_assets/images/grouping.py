"""Grouping verified pairs without chaining.

Single-linkage (connected components) merges a burst A~B~C into one group even when A and C
differ, and then drops distinct photos. Here an item joins a group only if it is related to
*every* member (the representative included), so a chain stays split.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence


def group_items(
    order: Sequence[int],
    related: Mapping[tuple[int, int], str],
    accept: Iterable[str] = ("duplicate",),
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
            if all(member in links for member in group) and (best is None or len(group) > len(groups[best])):
                best = index
        if best is None:
            best = len(groups)
            groups.append([])
        groups[best].append(item)
        group_of[item] = best
    return groups
