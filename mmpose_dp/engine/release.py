"""What one DP step released (for observers), and the budget's refusal."""
from typing import List, NamedTuple

import torch


class Release(NamedTuple):
    """What one DP step released, for a release observer (checks and
    audits on test data: ``clipped`` is un-noised)."""
    step: int  #: ledger index of the step (0 for the first)
    clipped: List[torch.Tensor]  #: this process's clipped sum, pre-noise
    released: List[torch.Tensor]  #: noisy sum over processes, pre-divisor
    divisor: float  #: the expected batch size the sum is divided by
    noise_std: float  #: sigma * C of the mechanism
    sample_rate: float
    units: int  #: privacy units in this process's micro-batches
    micro_batches: int

    @classmethod
    def of(cls, wrapper, clipped: List[torch.Tensor],
           released: List[torch.Tensor]) -> 'Release':
        """The release of a :class:`DPOptimWrapper`'s current step."""
        return cls(wrapper.ledger.steps, clipped,
                   [t.detach().clone() for t in released],
                   wrapper.expected_batch_size,
                   wrapper.noise_multiplier * wrapper.max_grad_norm,
                   wrapper.sample_rate, wrapper._step_units,
                   wrapper._step_micro_batches)


class PrivacyBudgetExceeded(RuntimeError):
    """The next step would spend more than the configured epsilon."""
