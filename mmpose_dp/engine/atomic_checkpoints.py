"""Checkpoints written atomically (write, fsync, rename).

MMEngine writes a checkpoint with ``open(path, 'wb').write(...)``: a crash
or ``kill -9`` mid-write leaves a torn file under the final name, which a
resume would then pick. :class:`DPRunner` saves through this backend, so
a checkpoint file is either the previous one or the complete new one.
"""
from mmengine.fileio import LocalBackend, register_backend

from ..privacy.atomic_write import atomic_write_bytes

#: ``backend_args=dict(backend=ATOMIC_BACKEND)`` selects it.
ATOMIC_BACKEND = 'mmpose_dp_atomic_local'


class AtomicLocalBackend(LocalBackend):
    """The local backend with atomic ``put`` and ``put_text``."""

    def put(self, obj: bytes, filepath) -> None:
        atomic_write_bytes(str(filepath), obj)

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        atomic_write_bytes(str(filepath), obj.encode(encoding))


register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)
