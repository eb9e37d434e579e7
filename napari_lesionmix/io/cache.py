"""A bounded, thread-safe least-recently-used cache of loaded cases and derived objects."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any


class LRUCache:
    """A small thread-safe LRU cache (threads of one worker share it): export's cases, online donors.

    Bounded by ``size`` entries and, when ``nbytes`` is given, by the bytes it
    reports for the values (the newest entry is always kept).
    """

    def __init__(self, size: int, max_bytes: int | None = None, nbytes: Callable[[Any], int] | None = None):
        self.size = size
        self.max_bytes = max_bytes
        self.nbytes = nbytes
        self.data: OrderedDict = OrderedDict()
        self.bytes = 0
        self.lock = threading.Lock()

    def get(self, key, make):
        with self.lock:
            if key in self.data:
                self.data.move_to_end(key)
                return self.data[key]
        value = make()  # outside the lock: loading is slow; a rare double load is harmless
        with self.lock:
            if key not in self.data:
                self.data[key] = value
                self.bytes += self._size_of(value)
            self.data.move_to_end(key)
            while len(self.data) > 1 and (
                len(self.data) > self.size or (self.max_bytes is not None and self.bytes > self.max_bytes)
            ):
                _, old = self.data.popitem(last=False)
                self.bytes -= self._size_of(old)
        return value

    def _size_of(self, value) -> int:
        return int(self.nbytes(value)) if self.nbytes is not None else 0
