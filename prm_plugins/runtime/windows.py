"""Windows over a chain too long for the model: every step scored once, with its context.

A window is the question, some *context* steps (rendered but not read), and a run of *new*
steps whose scores are read from that window. Windows are planned so that:

* every step is new in exactly one window, in order;
* the first window starts at step 0 and holds as many steps as fit;
* a later window keeps the preceding steps that fit in **half** of ``max_length`` together
  with its first new step (all of them when the chain's head fits), and fills the rest with
  new steps. Keeping the whole window as context would leave room for about one new step per
  window: 10,000 short steps would cost 10,000 full-length forward passes. Half a window
  bounds the cost at about ``2 * tokens / max_length`` windows while every step still sees
  at least ``max_length / 2`` tokens of question and preceding steps (or all of them).

Renders are found by binary search, so planning costs ``O(log max_length)`` renders per
window. Rendered length is assumed to grow with the number of steps (true of every
format); the chosen render is always checked against ``max_length``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

__all__ = ["Window", "plan_windows"]


class _Sized(Protocol):
    def __len__(self) -> int: ...


R = TypeVar("R", bound=_Sized)


@dataclass(frozen=True)
class Window(Generic[R]):
    """One window: steps ``start:end`` rendered; steps ``first_new:end`` are read from it."""

    start: int
    first_new: int
    end: int
    rendered: R


def plan_windows(
    render: Callable[[int, int], R],
    n_steps: int,
    max_length: int,
    too_long: Callable[[int, int], Exception],
) -> list[Window[R]]:
    """Plan the windows of a chain of ``n_steps`` steps.

    Args:
        render: ``render(a, b)`` renders the question with steps ``a:b`` (``a < b``).
        n_steps: number of steps (>= 1).
        max_length: most tokens in one window.
        too_long: ``too_long(step, n_tokens)`` builds the error raised when step ``step``
            with the question alone renders to ``n_tokens`` > ``max_length``.

    Returns:
        Windows in order; their ``first_new:end`` ranges tile ``0:n_steps``.

    Examples:
        Twenty steps of 5 tokens after a 4-token question, windows of 40 tokens:

        >>> ws = plan_windows(lambda a, b: "x" * (4 + 5 * (b - a)), 20, 40, ValueError)
        >>> [(w.start, w.first_new, w.end) for w in ws]
        [(0, 0, 7), (5, 7, 12), (10, 12, 17), (15, 17, 20)]
    """
    half = max_length // 2
    windows: list[Window[R]] = []
    nxt = 0
    while nxt < n_steps:
        alone = render(nxt, nxt + 1)
        if len(alone) > max_length:
            raise too_long(nxt, len(alone))
        # Context: the smallest start a <= nxt whose render of a..nxt fits in half a window
        # (the first window, nxt == 0, has none).
        lo, hi = max(0, nxt - half), nxt
        while lo < hi:
            mid = (lo + hi) // 2
            if len(render(mid, nxt + 1)) <= half:
                hi = mid
            else:
                lo = mid + 1
        start = lo
        # New steps: the largest end whose render of start..end fits in the window.
        best = render(start, nxt + 1)
        if len(best) > max_length:  # pragma: no cover - non-monotone rendering; be safe
            start, best = nxt, alone
        lo, hi = nxt + 1, min(n_steps, nxt + 1 + max_length)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            r = render(start, mid)
            if len(r) <= max_length:
                lo, best = mid, r
            else:
                hi = mid - 1
        windows.append(Window(start, nxt, lo, best))
        nxt = lo
    return windows
