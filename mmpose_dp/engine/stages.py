"""Post-processing stages of the DP step: projection and public features.

A stage maps the noisy averaged private gradient to the update direction.
Neither touches the ledger or the private per-sample machinery: the private
per-sample hooks are detached before any stage runs (checked), and the
public gradients come from plain autograd.
"""
import itertools
import time
from typing import List, Optional, Sequence

import torch
from mmengine.dataset import pseudo_collate
from mmengine.dist import all_reduce, get_dist_info
from mmengine.logging import MessageHub, print_log
from torch import nn

from ..privacy import PublicSubspace

STORAGE_DTYPES = {'float32': torch.float32, 'float16': torch.float16,
                  'bfloat16': torch.bfloat16}


def pose_loss(model: nn.Module, data_batch) -> torch.Tensor:
    """The scalar training loss of an MMPose estimator on a collated batch."""
    data = model.data_preprocessor(data_batch, training=True)
    losses = model(data['inputs'], data['data_samples'], mode='loss')
    loss, _ = model.parse_losses(losses)
    return loss


def _check_private_hooks_detached(wrapper) -> None:
    if wrapper.engine is not None and wrapper.engine.busy:
        raise RuntimeError(
            'private per-sample hooks are still attached: a public forward '
            'now could leak into the clipped sum')


def public_per_sample_gradients(model: nn.Module, samples: Sequence,
                                params: List[nn.Parameter],
                                dtype: torch.dtype,
                                group: int = 1) -> torch.Tensor:
    """G: one row per public sample (``group=1``), its gradient over
    ``params``; or, with ``group=b``, one row per consecutive group of b
    samples, the gradient of their batch loss (the released code of the
    paper: mini-batch-mean gradients, so rank at most m / b).

    Each row is its own forward/backward in eval mode (per sample by
    construction for ``group=1``, whatever the loss reduction), with plain
    autograd: nothing reaches ``p.grad`` or the private hooks. G is
    allocated once and filled row by row, so the peak is G plus one row's
    gradient.
    """
    numel = sum(p.numel() for p in params)
    groups = [list(range(i, min(i + group, len(samples))))
              for i in range(0, len(samples), group)]
    G = torch.empty(len(groups), numel, dtype=dtype,
                    device=params[0].device)
    was_training = model.training
    model.eval()
    try:
        for row, members in enumerate(groups):
            loss = pose_loss(model,
                             pseudo_collate([samples[i] for i in members]))
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            start = 0
            for p, g in zip(params, grads):
                stop = start + p.numel()
                if g is None:
                    G[row, start:stop] = 0
                else:
                    G[row, start:stop] = g.reshape(-1)
                start = stop
    finally:
        model.train(was_training)
    return G


class ProjectionStage:
    """PDP-SGD: replace the noisy gradient g by V V^T g.

    V spans the top-``rank`` eigen-directions of the public per-sample
    gradients, recomputed with the current weights at the first step and
    every ``interval`` steps. On several processes, rank 0's projection is
    broadcast so that all processes apply the same update.

    Args:
        model: the unwrapped pose estimator.
        public_dataset: the public records (an MMPose dataset or a list of
            pipeline outputs); every record is used at every refresh.
        rank: k, at most the number of public samples (paper: 100).
        interval: refresh period in steps (paper: 50).
        dtype: storage of the public gradients, 'float32', 'float16' or
            'bfloat16' (default; halves the memory of G against float32;
            the Gram matrix and the projection are computed in float32).
        basis: ``'per_sample'`` (default: one public gradient per sample,
            rank up to m) or ``'batch_mean'`` (one gradient per group of
            ``basis_batch_size`` public samples, as the paper's released
            code: rank at most m / basis_batch_size). Both use public data
            only, so both cost no privacy; the rank really used is logged.
        basis_batch_size: group size of ``'batch_mean'``.
    """

    def __init__(self, model: nn.Module, public_dataset, rank: int = 100,
                 interval: int = 50, dtype: str = 'bfloat16',
                 basis: str = 'per_sample',
                 basis_batch_size: int = 25) -> None:
        if dtype not in STORAGE_DTYPES:
            raise ValueError(f'projection.dtype must be one of '
                             f'{sorted(STORAGE_DTYPES)}, got {dtype!r}')
        if basis not in ('per_sample', 'batch_mean'):
            raise ValueError("projection.basis must be 'per_sample' or "
                             f"'batch_mean', got {basis!r}")
        self.group = 1 if basis == 'per_sample' else basis_batch_size
        rows = -(-len(public_dataset) // self.group)
        if rows < rank:
            raise ValueError(
                f'projection.rank={rank} exceeds the {rows} public gradients '
                f'({len(public_dataset)} public samples, basis {basis!r}); '
                'lower the rank or add public samples')
        if interval < 1:
            raise ValueError('projection.interval must be >= 1')
        self.model = model
        self.public_dataset = public_dataset
        self.rank = rank
        self.interval = interval
        self.dtype = STORAGE_DTYPES[dtype]
        self.subspace: Optional[PublicSubspace] = None
        self._since_refresh = 0

    def reset(self) -> None:
        """Forget the subspace (the trainable parameters changed): the next
        step computes it again."""
        self.subspace = None

    def refresh(self, wrapper) -> None:
        start = time.time()
        G = public_per_sample_gradients(self.model, self.public_dataset,
                                        wrapper.params, self.dtype,
                                        self.group)
        self.subspace = PublicSubspace(G, self.rank)
        self._since_refresh = 0
        seconds = time.time() - start
        hub = MessageHub.get_current_instance()
        hub.update_scalar('train/pdp_rank', self.subspace.rank)
        hub.update_scalar('train/pdp_energy', self.subspace.energy)
        hub.update_scalar('train/pdp_refresh_time', seconds)
        print_log(
            f'[privacy] PDP subspace refreshed: k={self.subspace.rank} of '
            f'{G.shape[0]} public gradients ({len(self.public_dataset)} '
            f'samples, {self.group} per gradient), captures '
            f'{100 * self.subspace.energy:.1f}% of their gradient energy, '
            f'{G.shape[1]} parameters, G in {self.dtype}, {seconds:.1f}s',
            logger='current')

    def __call__(self, wrapper, grads: List[torch.Tensor]
                 ) -> List[torch.Tensor]:
        _check_private_hooks_detached(wrapper)
        if self.subspace is None or self._since_refresh >= self.interval:
            self.refresh(wrapper)
        self._since_refresh += 1
        projected = self.subspace.project(grads)
        if get_dist_info()[1] > 1:
            for t in projected:
                torch.distributed.broadcast(t, src=0)
        return projected


class PublicFeatureStage:
    """Feature DP: add ``weight`` times the gradient of the loss on public
    features (blurred crops) of an independently drawn batch.

    That gradient is neither clipped nor noised and never enters the DP
    sum: it is computed after the private hooks are detached, with plain
    autograd, on a batch from its own loader (its own sampler), so the
    private Poisson sample keeps its amplification. On several processes
    the public gradients are averaged.

    Args:
        model: the unwrapped pose estimator.
        loader: yields collated batches of public-feature samples.
        weight: lambda (paper: 1.0 for FDP alone, 0.1 in the hybrid).
    """

    def __init__(self, model: nn.Module, loader, weight: float = 1.0):
        if weight < 0:
            raise ValueError('public_features.weight must be >= 0')
        self.model = model
        self.loader = loader
        self.weight = weight
        self._batches = itertools.chain.from_iterable(
            self._epochs())  # endless, with set_epoch per pass

    def _epochs(self):
        for epoch in itertools.count():
            sampler = getattr(self.loader, 'sampler', None)
            if hasattr(sampler, 'set_epoch'):
                sampler.set_epoch(epoch)
            yield self.loader

    def public_gradient(self, params: List[nn.Parameter]
                        ) -> List[torch.Tensor]:
        loss = pose_loss(self.model, next(self._batches))
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g
                 for p, g in zip(params, grads)]
        world_size = get_dist_info()[1]
        if world_size > 1:
            for g in grads:
                all_reduce(g, op='mean')
        MessageHub.get_current_instance().update_scalar(
            'train/public_feature_loss', float(loss.detach()))
        return grads

    def __call__(self, wrapper, grads: List[torch.Tensor]
                 ) -> List[torch.Tensor]:
        _check_private_hooks_detached(wrapper)
        public = self.public_gradient(wrapper.params)
        return [g + self.weight * pg for g, pg in zip(grads, public)]
