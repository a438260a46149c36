"""Secret seeds for Poisson sampling and noise.

Amplification by subsampling assumes that nobody knows which records were
drawn, and the noise protects only if nobody can replay it. Both seeds are
therefore drawn from the operating system's entropy pool (:mod:`secrets`),
never from numpy's or torch's global generators: MMEngine seeds those with
``randomness.seed``, which it writes to the log and to every checkpoint.
"""
import secrets

import numpy as np

#: Bits of a secret key (a torch/numpy seed takes at most 64 of them, so
#: streams are derived from the key rather than seeded with it).
KEY_BITS = 128


def secret_seed(bits: int = KEY_BITS) -> int:
    """A non-negative integer from the OS entropy pool."""
    return secrets.randbits(bits)


def derived_seed(key: int, *path: int) -> int:
    """A 64-bit seed for the sub-stream ``path`` of ``key``.

    For example ``derived_seed(key, rank, step)`` keys the noise of one
    step on one process, so a resumed run continues the stream instead of
    restarting it, and different processes never share noise.
    """
    if key < 0 or any(p < 0 for p in path):
        raise ValueError('seed keys and paths must be non-negative')
    state = np.random.SeedSequence(int(key), spawn_key=tuple(
        int(p) for p in path)).generate_state(1, np.uint64)
    return int(state[0])
