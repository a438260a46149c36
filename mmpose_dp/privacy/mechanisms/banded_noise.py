"""The correlated noise of banded matrix factorization (BandMF).

The strategy ``C`` is lower-triangular Toeplitz with ``b`` bands: the banded
square root of the prefix-sum matrix (Kalinin & Lampert 2024), whose
coefficients are ``binom(2k, k) / 4^k`` (the series of ``(1 - x)^(-1/2)``),
cut after ``b`` terms and scaled so that every column has norm at most 1
(one participation then moves ``C x`` by at most the clipping norm). The
gradient at step t gets ``w_t = (C^-1 z)_t``, z white, by forward
substitution::

    w_t = (z_t - sum_{1 <= j < b} c_j w_{t-j}) / c_0

so only the last ``b - 1`` noise vectors are kept. With ``b = 1``,
``w_t = z_t``: DP-SGD's noise, bit for bit.
"""
import math
from collections import deque
from typing import Deque, List, Sequence

import torch


def banded_sqrt_coefficients(bands: int) -> List[float]:
    """``c_0 ... c_{b-1}`` of the column-normalised banded square root."""
    if bands < 1:
        raise ValueError(f'bands must be >= 1, got {bands}')
    raw = [math.comb(2 * k, k) / 4 ** k for k in range(bands)]
    norm = math.sqrt(sum(c * c for c in raw))
    return [c / norm for c in raw]


def strategy_matrix(bands: int, steps: int) -> torch.Tensor:
    """``C`` (``steps x steps``, float64), for tests and reports."""
    coefficients = banded_sqrt_coefficients(bands)
    matrix = torch.zeros(steps, steps, dtype=torch.float64)
    for j, c in enumerate(coefficients):
        if j < steps:
            matrix += torch.diag(torch.full((steps - j, ), c,
                                            dtype=torch.float64), -j)
    return matrix


class CorrelatedNoise:
    """The stream ``w_t`` from white draws ``z_t``, one step at a time.

    Holds the last ``b - 1`` noise vectors: secret (with them, whoever sees
    an update can subtract part of its noise), so never pickled. A resumed
    run regenerates them (:meth:`replay`) from the white draws of the steps
    already taken, which needs the *same* noise key as the interrupted run:
    :mod:`mmpose_dp.privacy.secret_store` keeps it (and the group
    permutation's) outside anything a user shares.
    """

    def __init__(self, bands: int):
        self.coefficients = banded_sqrt_coefficients(bands)
        self._past: Deque[List[torch.Tensor]] = deque(maxlen=bands - 1)
        #: The step whose noise :meth:`next` makes next.
        self.step = 0

    def next(self, white: List[torch.Tensor]) -> List[torch.Tensor]:
        """``w_t`` from ``z_t`` (``white`` is consumed: updated in place)."""
        c0 = self.coefficients[0]
        noise = white
        for j, past in enumerate(reversed(self._past), start=1):
            for w, p in zip(noise, past):
                w.sub_(p, alpha=self.coefficients[j])
        if c0 != 1.0:
            for w in noise:
                w.div_(c0)
        if self._past.maxlen:
            self._past.append([w.clone() for w in noise])
        self.step += 1
        return noise

    def replay(self, white_at, until: int) -> None:
        """Regenerate the stream's state up to (not including) step
        ``until`` from ``white_at(t)``, the white draws of step t."""
        self._past.clear()
        self.step = 0
        for t in range(until):
            self.next(white_at(t))

    def __reduce__(self):
        raise TypeError('CorrelatedNoise holds past noise (secret) and is '
                        'never pickled')


def add_all(summed: Sequence[torch.Tensor],
            noise: Sequence[torch.Tensor]) -> None:
    for t, w in zip(summed, noise):
        t.add_(w)
