"""Gradient canaries for a one-run privacy audit (white box).

Each of ``m`` canaries is an extra "record" whose gradient is a fixed
direction: one coordinate of the trainable parameters (a Dirac canary),
with a norm far above the clipping norm C, so the mechanism clips it to C
like any sample. A canary is *included* with probability 1/2 (the auditor's
secret); an included canary joins each step independently with the run's
sample rate q, exactly as a private record is Poisson-sampled. The auditor
sees what the mechanism releases at every step, the noisy sum of clipped
gradients, and scores each canary by the sum of its coordinate over the
run; included canaries should score higher only as much as epsilon allows.
"""
from typing import List, Sequence

import numpy as np
import torch


class GradientCanaries:
    """``m`` Dirac gradient canaries over the trainable parameters.

    Args:
        params: the trainable parameters, in the order of the DP step's sums.
        num_canaries: m (distinct coordinates; at most the parameter count).
        sample_rate: q of the run.
        max_grad_norm: C.
        seed: seed of the auditor's secrets (coordinates, inclusion bits,
            canary sampling); independent of the run's own secret seeds.
        magnitude: a canary's gradient norm before clipping, in units of C.
        clip: False simulates a mechanism that forgets to clip (self-check).
    """

    def __init__(self, params: Sequence[torch.Tensor], num_canaries: int,
                 sample_rate: float, max_grad_norm: float, seed: int = 0,
                 magnitude: float = 100.0, clip: bool = True):
        sizes = [p.numel() for p in params]
        total = sum(sizes)
        if not 0 < num_canaries <= total:
            raise ValueError(f'need 1 <= canaries <= {total} parameters, '
                             f'got {num_canaries}')
        self.rng = np.random.default_rng([seed, 0xCA9A])
        flat = np.sort(self.rng.choice(total, num_canaries, replace=False))
        self.included = self.rng.random(num_canaries) < 0.5
        bounds = np.cumsum([0] + sizes)
        self.param_index = np.searchsorted(bounds, flat, side='right') - 1
        self.offset = flat - bounds[self.param_index]
        self.sample_rate = sample_rate
        norm = magnitude * max_grad_norm
        self.value = min(norm, max_grad_norm) if clip else norm
        self.scores = np.zeros(num_canaries)
        self.draws = np.zeros(num_canaries, dtype=np.int64)

    def _add(self, tensors: List[torch.Tensor], which: np.ndarray,
             values: np.ndarray) -> None:
        for k in np.unique(self.param_index[which]):
            mask = which & (self.param_index == k)
            flat = tensors[k].view(-1)
            index = torch.as_tensor(self.offset[mask], device=flat.device)
            flat.index_add_(0, index, torch.as_tensor(
                values[mask], dtype=flat.dtype, device=flat.device))

    def add(self, summed: List[torch.Tensor]) -> None:
        """Add this step's sampled included canaries (clipped) to the sum of
        clipped gradients, in place (before the noise)."""
        drawn = self.included & (self.rng.random(len(self.included)) <
                                 self.sample_rate)
        self.draws += drawn
        self._add(summed, drawn, np.full(len(drawn), self.value))

    def observe(self, released: List[torch.Tensor]) -> None:
        """Score every canary by its coordinate of the released noisy sum."""
        for k in np.unique(self.param_index):
            mask = self.param_index == k
            flat = released[k].detach().reshape(-1)
            self.scores[mask] += flat[torch.as_tensor(
                self.offset[mask], device=flat.device)].double().cpu().numpy()
