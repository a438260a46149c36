"""Multi-process training on CPU (gloo), e.g. for tests or CPU clusters.

mmengine 0.10.7's pytorch launcher calls ``torch.cuda.set_device`` and wraps
the model with ``device_ids=[LOCAL_RANK]``, both of which fail without a GPU.
When no GPU is visible, the tools initialise the gloo process group
themselves (mmengine then skips its own initialisation) and use
:class:`CPUDistributedDataParallel`, which drops ``device_ids``. With a GPU
nothing changes.
"""
import os

import torch
import torch.distributed as dist
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` for modules on the CPU."""

    def __init__(self, module, device_ids=None, **kwargs):
        super().__init__(module=module, device_ids=None, **kwargs)


def setup_cpu_distributed(cfg, launcher: str) -> None:
    """With ``launcher='pytorch'`` and no GPU: start gloo and pick the CPU
    model wrapper in ``cfg`` (in place)."""
    if launcher != 'pytorch' or torch.cuda.is_available():
        return
    if not dist.is_initialized():
        dist.init_process_group(
            backend='gloo', rank=int(os.environ['RANK']),
            world_size=int(os.environ['WORLD_SIZE']))
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper['type'] = 'CPUDistributedDataParallel'
    wrapper.setdefault('broadcast_buffers', False)
    cfg.model_wrapper_cfg = wrapper
