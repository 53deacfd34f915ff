"""Continue BPE training from an existing segmentation: the merges a tokenizer would have learned next.

Starting from how the base tokenizer already splits each word (not from characters) makes every learned merge fire
when appended after the base's merges: at that point the base merges are exhausted, so the text is in exactly the
state the merge was counted on. Merges whose result the vocabulary already holds are never learned: base merges may
build on such a token, which would make the appended merges interact with the old ones.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Iterable
from itertools import pairwise


def continue_bpe(words: Iterable[tuple[tuple[str, ...], float]], n_merges: int, taken: set[str],
                 allowed: Callable[[str, str], bool] = lambda a, b: True,
                 min_count: int = 2) -> list[tuple[str, str]]:
    """Up to n_merges merges (a, b), most frequent adjacent pair first (ties: the smaller pair).

    words: (segmentation, weight) pairs; a weight is a count, or negative for a word of text the merges should
    leave alone (a pair's score is then its target count less its weighted use there). A pair is merged only if
    a+b is not in `taken` and allowed(a, b). Stops early when no pair scores min_count.
    """
    segs: list[list[str]] = []
    freqs: list[float] = []
    pair_count: dict[tuple[str, str], float] = defaultdict(float)
    where: dict[tuple[str, str], set[int]] = defaultdict(set)
    for seg, n in words:
        if len(seg) < 2:
            continue
        i = len(segs)
        segs.append(list(seg))
        freqs.append(n)
        for p in pairwise(seg):
            pair_count[p] += n
            where[p].add(i)
    heap = [(-c, p) for p, c in pair_count.items() if c > 0]
    heapq.heapify(heap)
    taken = set(taken)
    merges: list[tuple[str, str]] = []
    while heap and len(merges) < n_merges:
        neg, pair = heapq.heappop(heap)
        count = pair_count.get(pair, 0)
        if -neg != count:
            continue  # stale: a fresher entry with the current count is in the heap
        if count < min_count:
            break
        a, b = pair
        if a + b in taken or not allowed(a, b):
            continue
        merges.append(pair)
        taken.add(a + b)
        changed: dict[tuple[str, str], float] = defaultdict(float)
        for i in where.pop(pair):
            old = segs[i]
            new = _merge(old, a, b)
            if new is None:
                continue
            f = freqs[i]
            for p in pairwise(old):
                changed[p] -= f
            for p in pairwise(new):
                changed[p] += f
                where[p].add(i)
            segs[i] = new
        for p, delta in changed.items():
            if delta:
                pair_count[p] += delta
                if pair_count[p] > 0:  # at or below zero it stays counted: later merges move it
                    heapq.heappush(heap, (-pair_count[p], p))
    return merges


def _merge(seg: list[str], a: str, b: str) -> list[str] | None:
    """seg with every non-overlapping (a, b), left to right, joined; None if it has none."""
    out, i, hit = [], 0, False
    while i < len(seg):
        if i + 1 < len(seg) and seg[i] == a and seg[i + 1] == b:
            out.append(a + b)
            i += 2
            hit = True
        else:
            out.append(seg[i])
            i += 1
    return out if hit else None
