"""BatchNorm layers that see one value per channel (1x1 pooled maps).

ResNeSt's split attention (and any squeeze-style block with BatchNorm)
normalises globally pooled ``N x C x 1 x 1`` features. GroupNorm there
normalises groups of ``C / G`` single values: with one channel a group
its output is its bias whatever the input, and torch refuses a batch of
one (``Expected more than 1 value per channel``), in eval mode too, so
single-image inference breaks. :func:`convert_batch_norm` keeps such
layers as fixed-statistics affine maps (:class:`FrozenBatchNorm`) instead.
"""
from typing import List, Optional, Sequence

import torch
from torch import nn

from .batch_norm import is_batch_norm


def single_value_batch_norms(model: nn.Module,
                             input_size: Optional[Sequence[int]]
                             ) -> List[str]:
    """Names of the BatchNorm layers whose inputs are ``N x C x 1 (x 1)``
    in one eval-mode forward of a blank ``input_size`` (``(w, h)``) image
    (public: no data is read); empty without an input size."""
    if not input_size or not hasattr(model, 'extract_feat'):
        return []
    found = []

    def probe(name):
        def hook(module, args):
            x = args[0]
            if x.dim() > 2 and x[0, 0].numel() == 1:
                found.append(name)
        return hook

    handles = [m.register_forward_pre_hook(probe(n))
               for n, m in model.named_modules() if is_batch_norm(m)]
    was_training = model.training
    reference = next(model.parameters(), None)
    width, height = int(input_size[0]), int(input_size[1])
    blank = torch.zeros(2, 3, height, width,
                        device=getattr(reference, 'device', None),
                        dtype=getattr(reference, 'dtype', None))
    try:
        model.eval()
        with torch.no_grad():
            model(blank, None, mode='tensor')  # backbone, neck and head
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return sorted(set(found))
