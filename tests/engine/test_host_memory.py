"""release_host_memory: freed heap pages go back to the system on CPU."""
import torch

from mmpose_dp.engine import host_memory


def _rss_mib() -> float:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def test_trim_returns_freed_heap_pages():
    assert host_memory._glibc() is not None  # the CI machines run glibc
    # 100 MiB in 64 KiB tensors (below the mmap threshold: heap blocks),
    # the last kept so that free() cannot shrink the heap from its top.
    blocks = [torch.ones(16 * 1024) for _ in range(1600)]
    last = blocks.pop()
    del blocks
    before = _rss_mib()
    assert host_memory.release_host_memory(torch.device('cpu'))
    assert before - _rss_mib() > 50
    del last


def test_only_the_cpu_is_trimmed():
    assert not host_memory.release_host_memory(torch.device('meta'))
