"""Per-sample gradients with ``torch.func`` (``'vmap'``).

Each sample's loss is its own function call on a batch of one
(``functional_call`` inside ``vmap(grad(...))``), so a module that folds
windows, tokens or joints into the batch dimension (Swin, HRFormer, TinyViT,
a flow over keypoints) still gives exactly one gradient per sample, and a
parameter held directly on a container module (``pos_embed``) needs no
grad sampler. The per-sample gradient of a batch of one is the gradient of
that sample's loss whether the batch loss is a mean or a sum, so no
rescaling is involved.
"""
from typing import List, Optional

import torch
from torch.func import functional_call, grad_and_value, vmap

from .base import ClippingEngine, clip_units


class VmapEngine(ClippingEngine):
    """Per-sample gradients by ``torch.func.vmap`` over samples.

    Args:
        chunk_size: samples per vmapped call (memory: chunk_size times the
            trainable parameters); None: the whole micro-batch at once.
    """

    name = 'vmap'

    def __init__(self, model, batch_loss, loss_reduction,
                 chunk_size: Optional[int] = None):
        super().__init__(model, batch_loss, loss_reduction)
        self.chunk_size = chunk_size

    def per_sample_gradients(self, batch) -> (List[torch.Tensor],
                                              torch.Tensor):
        """``[samples, *shape]`` gradient of every trainable parameter, and
        the per-sample losses."""
        tensors, rebuild = self.batch_loss.split(batch)
        trainable = dict(zip(self.names, self.params))
        fixed = {n: t for n, t in self.model.named_parameters()
                 if n not in trainable}
        fixed.update(self.model.named_buffers())
        model, batch_loss = self.model, self.batch_loss

        class _Call:
            """The model with given weights, called like the module."""

            def __init__(self, weights):
                self.weights = weights

            def __call__(self, *args, **kwargs):
                return functional_call(model, (self.weights, fixed), args,
                                       kwargs)

            def __getattr__(self, name):
                return getattr(model, name)

        def loss_of_one(weights, *slices):
            return batch_loss.loss(_Call(weights), rebuild(slices))

        detached = {n: p.detach() for n, p in trainable.items()}
        per_sample = vmap(
            grad_and_value(loss_of_one), in_dims=(None, ) + (0, ) *
            len(tensors), randomness='different',
            chunk_size=self.chunk_size)
        with self.batch_loss.per_sample_context():
            grads, losses = per_sample(detached, *tensors)
        return [grads[n] for n in self.names], losses

    def _clipped_sum(self, batch, units, max_grad_norm, unit_mask=None):
        grads, losses = self.per_sample_gradients(batch)
        loss = losses.mean() if self.loss_reduction == 'mean' else \
            losses.sum()
        return (clip_units(grads, units, max_grad_norm, unit_mask),
                loss.detach())
