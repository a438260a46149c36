"""Bisection on a monotone predicate, shared by the calibrations."""
from typing import Callable, Tuple


def bisect(passes: Callable[[float], bool], low: float, high: float,
           tolerance: float, relative: bool = True) -> Tuple[float, float]:
    """Narrow ``[low, high]``, where ``passes`` fails at ``low``, holds at
    ``high`` and flips once between them, to at most ``tolerance`` wide
    (relative to ``high`` unless ``relative=False``); returns the final
    ``(failing, passing)`` ends."""
    while high - low > (tolerance * high if relative else tolerance):
        middle = (low + high) / 2
        if passes(middle):
            high = middle
        else:
            low = middle
    return low, high
