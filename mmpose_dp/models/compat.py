"""Stock MMPose modules whose forward cannot run under per-sample hooks as
written, given forwards that compute exactly the same values.

Applied per instance (the class and its state-dict keys are unchanged) by
:func:`patch_for_per_sample_gradients`; each patch is tested against the
stock forward in tests/models/test_model_families.py, and the first private step
compares the private loss with the model's own anyway
(:func:`mmpose_dp.engine.loops.check_private_forward`).

* ``RLELoss`` (RLE regression head): its normalising flow runs on
  ``error.reshape(-1, 2)``, one row per *keypoint*, so each sample would
  contribute K rows of per-sample gradients. The patched forward keeps the
  ``[B, K, 2]`` shape through the flow (every operation is per row), so the
  flow's per-sample gradients have one row per sample.
"""
import math
import types
from typing import List

import torch
from torch import nn


def _flow_log_prob(flow, x: torch.Tensor) -> torch.Tensor:
    """``RealNVP.log_prob`` over the last dimension, any leading shape."""
    log_det, z = x.new_zeros(x.shape[:-1]), x
    for i in reversed(range(len(flow.t))):
        z_ = flow.mask[i] * z
        s = flow.s[i](z_) * (1 - flow.mask[i])
        t = flow.t[i](z_) * (1 - flow.mask[i])
        z = (1 - flow.mask[i]) * (z - t) * torch.exp(-s) + z_
        log_det = log_det - s.sum(dim=-1)
    return flow.prior.log_prob(z) + log_det


def _rle_loss_forward(self, pred, sigma, target, target_weight=None):
    """``RLELoss.forward`` with the flow on ``[B, K, 2]``."""
    sigma = sigma.sigmoid()
    error = (pred - target) / (sigma + 1e-9)
    log_phi = _flow_log_prob(self.flow_model, error).unsqueeze(-1)
    nf_loss = torch.log(sigma) - log_phi
    if self.residual:
        if self.q_distribution == 'laplace':
            loss_q = torch.log(sigma * 2) + torch.abs(error)
        else:
            loss_q = torch.log(sigma * math.sqrt(2 * math.pi)) + \
                0.5 * error**2
        loss = nf_loss + loss_q
    else:
        loss = nf_loss
    if self.use_target_weight:
        loss = loss * target_weight
    if self.size_average:
        loss = loss / len(loss)
    return loss.sum()


#: class name -> forward with the same values.
PATCHED_FORWARDS = {
    'RLELoss': _rle_loss_forward,
}


def patch_for_per_sample_gradients(model: nn.Module) -> List[str]:
    """Give every module listed in :data:`PATCHED_FORWARDS` its hook-safe
    forward; returns the names of the modules patched."""
    patched = []
    for name, module in model.named_modules():
        forward = PATCHED_FORWARDS.get(type(module).__name__)
        if forward is not None and type(module).__module__.startswith(
                'mmpose.'):
            module.forward = types.MethodType(forward, module)
            patched.append(name)
    return patched
