"""Seeded window shuffle of a stream, checkpointed as (state at window start, window number, position).

grain has the same transform, but its per-element index shuffle is slow, the more so the smaller the window
(README, Performance); a numpy permutation per window costs next to nothing at any size. A window also ends where
the `key` of the elements changes (the epoch), so a corpus smaller than the window never shows a document twice in
one window.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grain
import numpy as np


class WindowShuffle(grain.IterDataset):
    """Reads up to `window` elements of equal `key`, yields them in a permutation seeded by (seed, window number),
    repeats. `key` must be picklable (grain workers), e.g. an operator.itemgetter."""

    def __init__(self, parent: grain.IterDataset, *, window: int, seed: int, key: Callable[[Any], Any]):
        super().__init__(parent)
        self._window, self._seed, self._key = window, seed, key

    def __iter__(self) -> _WindowShuffleIterator:
        return _WindowShuffleIterator(self._parent.__iter__(), self._window, self._seed, self._key)

    def __str__(self) -> str:
        return f"WindowShuffle(window={self._window})"


class _WindowShuffleIterator(grain.DatasetIterator):
    def __init__(self, parent: grain.DatasetIterator, window: int, seed: int, key: Callable[[Any], Any]):
        super().__init__(parent)
        self._size, self._seed, self._key = window, seed, key
        self._start_state = parent.get_state()
        self._index, self._pos = 0, 0
        self._buffer: list[Any] = []

    def _fill(self) -> None:
        self._start_state = self._parent.get_state()
        items = []
        while len(items) < self._size:
            before = self._parent.get_state()
            try:
                item = next(self._parent)
            except StopIteration:
                break
            if items and self._key(item) != self._key(items[0]):
                self._parent.set_state(before)  # it opens the next window
                break
            items.append(item)
        order = np.random.default_rng([self._seed, self._index]).permutation(len(items))
        self._buffer = [items[i] for i in order]

    def __next__(self) -> Any:
        if self._pos == len(self._buffer):
            if self._buffer:
                self._index += 1
            self._pos = 0
            self._fill()
            if not self._buffer:
                raise StopIteration
        item = self._buffer[self._pos]
        self._buffer[self._pos] = None  # release it once handed out
        self._pos += 1
        return item

    def get_state(self) -> dict:
        return {"start": self._start_state, "window": self._index, "pos": self._pos,
                "filled": bool(self._buffer)}

    def set_state(self, state: dict) -> None:
        self._index, self._buffer, self._pos = state["window"], [], 0
        self._parent.set_state(state["start"])
        if state["filled"]:
            self._fill()
            self._pos = state["pos"]
