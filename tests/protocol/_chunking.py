"""Helpers shared by the parser tests: ways to cut a byte string into chunks."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from hypothesis import strategies as st

__all__ = ["FEEDERS", "bytewise", "chunked", "split_at", "whole"]


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    """Cut ``data`` at the given offsets (in any order, repeats allowed)."""
    points = sorted({0, len(data), *(min(max(cut, 0), len(data)) for cut in cuts)})
    return [data[start:stop] for start, stop in itertools.pairwise(points)]


def whole(data: bytes) -> Iterator[bytes]:
    yield data


def bytewise(data: bytes) -> Iterator[bytes]:
    for index in range(len(data)):
        yield data[index : index + 1]


#: The two fixed ways every parser test feeds its input (h11's tests/test_io.py).
FEEDERS = {"whole": whole, "bytewise": bytewise}


_ANY_BYTES = st.binary(max_size=300)


@st.composite
def chunked(
    draw: st.DrawFn, payloads: st.SearchStrategy[bytes] = _ANY_BYTES
) -> tuple[bytes, list[bytes]]:
    """A payload and one arbitrary way of splitting it into chunks."""
    payload = draw(payloads)
    cuts = draw(st.lists(st.integers(0, len(payload)), max_size=24))
    return payload, split_at(payload, cuts)
