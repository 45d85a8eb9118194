"""Window planning (prm_plugins.runtime.windows) on synthetic renders whose lengths are known."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from prm_plugins.runtime.windows import plan_windows


def _render(q_len: int, lengths: list[int]):  # type: ignore[no-untyped-def]
    calls: list[tuple[int, int]] = []

    def render(a: int, b: int) -> str:
        assert 0 <= a < b <= len(lengths)
        calls.append((a, b))
        return "x" * (q_len + sum(lengths[a:b]))

    return render, calls


@settings(max_examples=200, deadline=None)
@given(q_len=st.integers(0, 30), lengths=st.lists(st.integers(1, 25), min_size=1, max_size=300),
       max_length=st.integers(32, 128))
def test_windows_tile_the_chain_and_fit(q_len: int, lengths: list[int], max_length: int) -> None:
    assume(q_len + max(lengths) <= max_length)  # else: the error case, tested below
    render, calls = _render(q_len, lengths)
    windows = plan_windows(render, len(lengths), max_length, lambda i, n: ValueError(i, n))
    # every step is new in exactly one window, in order
    assert [i for w in windows for i in range(w.first_new, w.end)] == list(range(len(lengths)))
    half = max_length // 2
    for k, w in enumerate(windows):
        assert len(w.rendered) == q_len + sum(lengths[w.start:w.end]) <= max_length
        assert w.start <= w.first_new < w.end
        if k == 0:
            assert w.start == 0
        elif w.start > 0:  # context is the longest run that fits with its first new step in half
            assert q_len + sum(lengths[w.start - 1:w.first_new + 1]) > half
        if w.start < w.first_new:
            assert q_len + sum(lengths[w.start:w.first_new + 1]) <= half
        if w.end < len(lengths):  # as many new steps as fit
            assert q_len + sum(lengths[w.start:w.end + 1]) > max_length
    # planning costs O(log) renders per window, not O(window)
    assert len(calls) <= len(windows) * (3 + 2 * max_length.bit_length())


def test_uniform_short_steps_need_few_windows() -> None:
    render, _ = _render(10, [6] * 10_000)
    windows = plan_windows(render, 10_000, 512, lambda i, n: ValueError(i, n))
    tokens = 10 + 6 * 10_000
    assert len(windows) <= 2 * tokens / 512 + 1  # half a window of new steps or more


def test_a_step_that_cannot_fit_names_itself() -> None:
    render, _ = _render(10, [5, 5, 100, 5])
    with pytest.raises(ValueError) as info:
        plan_windows(render, 4, 64, lambda i, n: ValueError(i, n))
    assert info.value.args == (2, 110)
