"""Local checkpoint loading on torch >= 2.6 (mmengine 0.10.7 compatibility).

torch 2.6 made ``torch.load(weights_only=True)`` the default; mmengine 0.10.7
checkpoints hold numpy objects (message hub, dataset meta), so ``tools/test.py``,
``load_from`` and ``--resume`` fail with ``UnpicklingError`` (mmengine issue
#1655, fixed only on unreleased mmengine main). This registers mmengine's
local-file scheme again with ``weights_only=False``, which is what mmengine
itself did before torch 2.6. Unpickling runs code: load only checkpoints
you trust. Remove this shim once mmengine passes ``weights_only`` itself.
"""
import os.path as osp

import torch
from mmengine.runner.checkpoint import CheckpointLoader


def load_local_checkpoint(filename: str, map_location=None):
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return torch.load(filename, map_location=map_location, weights_only=False)


def register_checkpoint_loader() -> None:
    CheckpointLoader.register_scheme(
        prefixes='', loader=load_local_checkpoint, force=True)


register_checkpoint_loader()
