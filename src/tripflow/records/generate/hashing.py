"""Counter-based randomness: per-item draws that do not depend on generation order.

A document's title, url and areas must be the same whether it is first built for the
catalogue file or for a click on day 2000, and building one must not consume draws from
any stream. So per-item values are a pure function of (seed, item number, draw number):
the splitmix64 finaliser applied to a Weyl sequence, vectorised with numpy.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain
from typing import TypeVar

import numpy as np

_T = TypeVar("_T")

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_M60 = np.uint64((1 << 60) - 1)


def mix64(values: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (a bijection on uint64; wraps modulo 2**64 by design)."""
    x = values.astype(np.uint64, copy=True)
    x ^= x >> _S30
    x *= _MIX1
    x ^= x >> _S27
    x *= _MIX2
    x ^= x >> _S31
    return x


def stream_rng(seed: int, *stream: int) -> np.random.Generator:
    """A PCG64 generator per (seed, purpose, …): streams never share or shift draws."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *stream])))


def stream_key(seed: int, stream: int) -> np.uint64:
    """A 64-bit key per (seed, purpose) so different purposes never share draws."""
    base = np.array([(seed * 0x100000001B3 + stream * 0x1F3) & 0xFFFFFFFFFFFFFFFF], np.uint64)
    return mix64(mix64(base))[0]


def draw_columns(key: np.uint64, items: np.ndarray, columns: int) -> np.ndarray:
    """`columns` independent 64-bit draws per item: an (items, columns) uint64 array."""
    base = items.astype(np.uint64) * _GOLDEN + key
    offsets = (np.arange(1, columns + 1, dtype=np.uint64) * _MIX2)[None, :]
    return mix64(mix64(base)[:, None] + offsets)


def unique_60bit(key: np.uint64, counters: np.ndarray) -> np.ndarray:
    """A keyed bijection on 60-bit integers: distinct counters give distinct outputs."""
    x = (counters.astype(np.uint64) ^ key) & _M60
    for multiplier, shift in ((0xD6E8FEB86659FD93, 29), (0xA0761D6478BD642F, 32)):
        x ^= x >> np.uint64(shift)
        x = (x * np.uint64(multiplier)) & _M60  # odd multiplier: invertible modulo 2**60
    x ^= x >> np.uint64(29)
    return x


_MASK64 = (1 << 64) - 1


def _remix(value: int) -> int:
    """splitmix64 step on a Python int (same finaliser as `mix64`)."""
    z = (value + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _extension(last: int) -> Iterator[int]:
    """Further draws for the rare item that needs more than its row holds."""
    value = last
    while True:
        value = _remix(value)
        yield value


class Draws:
    """Reads a row of draws one at a time (the per-item slow path)."""

    __slots__ = ("_values",)

    def __init__(self, values: list[int]) -> None:
        self._values = chain(values, _extension(values[-1]))

    def below(self, n: int) -> int:
        return next(self._values) % n

    def pick(self, items: tuple[_T, ...]) -> _T:
        return items[next(self._values) % len(items)]
