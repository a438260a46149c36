"""A once-only phase's freed memory goes back to the OS (glibc)."""
import contextlib
import subprocess
import sys

import pytest
import torch

from mmpose_dp.privacy.engines import heap, verification

SCRIPT = '''
import ctypes, sys, torch
from mmpose_dp.privacy.engines.heap import _glibc, returned_to_os


class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        'arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks',
        'fsmblks', 'uordblks', 'fordblks', 'keepcost')]


libc = _glibc()
libc.mallinfo2.restype = Mallinfo2


def mapped_pieces(n=50):
    """How many of n 1 MiB tensors got a mapping of their own."""
    before = libc.mallinfo2().hblks
    pieces = [torch.ones(2**18) for _ in range(n)]
    got = libc.mallinfo2().hblks - before
    del pieces
    return got


x = torch.zeros(4 * 2**20); del x  # a 16 MiB free raises the threshold
if sys.argv[1] == 'plain':
    print(mapped_pieces())
else:
    with returned_to_os():
        print(mapped_pieces())
    print(mapped_pieces())
'''


@pytest.mark.skipif(heap._glibc() is None, reason='glibc only')
def test_large_pieces_of_the_block_are_mapped_on_their_own():
    def run(mode):
        return [int(v) for v in subprocess.run(
            [sys.executable, '-c', SCRIPT, mode], text=True,
            capture_output=True, check=True).stdout.split()]

    plain, = run('plain')
    inside, after = run('scoped')
    # Inside: each unmapped (returned) when freed; elsewhere from the heap,
    # which keeps freed pieces resident.
    assert inside == 50
    assert plain < 5 and after < 5


def test_the_engine_check_runs_in_the_block(monkeypatch):
    entered = []

    @contextlib.contextmanager
    def recording():
        entered.append(True)
        yield

    monkeypatch.setattr(verification, 'returned_to_os', recording)
    from mmpose_dp.privacy.engines import TensorBatchLoss, build_engine
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    loss = TensorBatchLoss(lambda m, x, y: ((m(x) - y) ** 2).mean())
    engine = build_engine('fast', model, loss, 'mean')
    batch = (torch.randn(3, 3), torch.randn(3, 2))
    engine.clipped_sum(batch, [0, 1, 2], 1.0)
    assert entered == [True]
