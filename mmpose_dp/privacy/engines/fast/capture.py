"""One trainable layer's capture during a private pass (the rule base)."""
from typing import List, Optional, Tuple

import torch
from torch import nn


class LayerCapture:
    """What a layer keeps of a pass, its per-unit norms and clipped sums.

    A rule (one per layer family, :func:`~.rules.register_layer_rule`)
    gives :meth:`instantiate` (per-sample gradients) and, where the ghost
    norm applies (``ghostable``), :meth:`ghost_sizes`,
    :meth:`ghost_factors`, :meth:`bias_grad` and :meth:`kept_weight_sum`.
    """

    kind = ''
    ghostable = False

    def __init__(self, module: nn.Module):
        self.module = module
        self.params = [p for p in module.parameters(recurse=False)
                       if p.requires_grad]
        # Decided once: requires_grad is switched off during the pass.
        trainable = {id(p) for p in self.params}
        self.train_weight = id(getattr(module, 'weight', None)) in trainable
        self.train_bias = id(getattr(module, 'bias', None)) in trainable
        self.units: Optional[torch.Tensor] = None
        self.num_units = 0
        self.reset()

    @classmethod
    def supports(cls, module: nn.Module) -> bool:
        """Whether this rule is exact for ``module``'s settings."""
        return True

    def reset(self):
        self.calls = 0
        self.kept: List = []  # (a, g) for the book-keeping sum
        self.grads: Optional[List[torch.Tensor]] = None  # instantiated
        self.norm2: Optional[torch.Tensor] = None  # ghost norms of kept

    # -- the rule -----------------------------------------------------------
    def instantiate(self, a, g) -> List[torch.Tensor]:
        """Per-sample gradients ``[B, *shape]`` of the trainable params."""
        raise NotImplementedError

    def ghost_sizes(self, a, g) -> Tuple[int, int, int]:
        """``(output positions, fan in, fan out)`` of one sample."""
        raise NotImplementedError

    def ghost_factors(self, a, g):
        """(A, G): per-sample factors of the weight gradient ``G^T A``,
        shapes ``[B, groups, T, in]`` and ``[B, groups, T, out]``."""
        raise NotImplementedError

    def bias_grad(self, g: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def kept_weight_sum(self, a, g, c) -> torch.Tensor:
        """``sum_b c_b * weight gradient of sample b`` (``c`` broadcast)."""
        raise NotImplementedError

    # -- per call -----------------------------------------------------------
    def _ghost(self, a: torch.Tensor, g: torch.Tensor) -> bool:
        """The ghost norm where it costs less than instantiating: per
        sample ``T^2 (in + out)`` against ``T in out`` operations, i.e.
        ``T (in + out) < in out`` (few output positions, many weights)."""
        if not self.ghostable or self.calls > 1 or self.grads is not None:
            return False
        positions, fan_in, fan_out = self.ghost_sizes(a, g)
        return positions * (fan_in + fan_out) < fan_in * fan_out

    def receive(self, a: torch.Tensor, g: torch.Tensor) -> None:
        """The gradient of one call's output arrived: work out the
        per-sample norm now, keep what the clipped sum needs."""
        if self._ghost(a, g):
            self.norm2 = self._ghost_norm2(a, g)
            self.kept.append((a, g))
            return
        grads = self.instantiate(a, g)
        for ka, kg in self.kept:  # the layer was called again
            grads = [x + y for x, y in zip(grads, self.instantiate(ka, kg))]
        self.kept, self.norm2 = [], None
        self.grads = grads if self.grads is None else [
            x + y for x, y in zip(self.grads, grads)]

    def _ghost_norm2(self, a, g) -> torch.Tensor:
        """Squared per-unit norms from ``sum_tt' (a_t a_t')(g_t g_t')``."""
        total = torch.zeros(self.num_units, dtype=torch.float64,
                            device=a.device)
        if self.train_weight:
            A, G = self.ghost_factors(a, g)
            A = per_unit_positions(A, self.units, self.num_units)
            G = per_unit_positions(G, self.units, self.num_units)
            total += ((A @ A.transpose(2, 3)) *
                      (G @ G.transpose(2, 3))).sum((1, 2, 3)).double()
        if self.train_bias:
            bias = self.bias_grad(g)
            per_unit = bias.new_zeros((self.num_units, ) + bias.shape[1:])
            per_unit.index_add_(0, self.units, bias)
            total += per_unit.pow(2).sum(1).double()
        return total

    # -- after the backward -------------------------------------------------
    def squared_norms(self) -> torch.Tensor:
        """Squared norm of each unit's gradient of this layer's parameters
        (a unit's samples summed first)."""
        if self.norm2 is not None:
            return self.norm2
        total = torch.zeros(self.num_units, dtype=torch.float64,
                            device=self.units.device)
        for grad in self.grads or ():
            if not is_identity(self.units, self.num_units):
                per_unit = grad.new_zeros((self.num_units, ) +
                                          grad.shape[1:])
                grad = per_unit.index_add_(0, self.units, grad)
            total += torch.linalg.vector_norm(
                grad.reshape(self.num_units, -1), dim=1).double()**2
        return total

    def clipped_sums(self, factors: torch.Tensor) -> List[torch.Tensor]:
        """``sum_b factors[b] * per-sample gradient[b]`` per parameter; for
        a kept layer one ordinary weight gradient with its output gradient
        scaled per sample (book-keeping)."""
        if self.grads is not None:
            return [torch.einsum('b,b...->...', factors.to(g.dtype), g)
                    for g in self.grads]
        if not self.kept:  # the layer took no part in the forward
            return [torch.zeros_like(p) for p in self.params]
        a, g = self.kept[0]
        c = factors.to(g.dtype).view(-1, *[1] * (g.dim() - 1))
        out = [self.kept_weight_sum(a, g, c)] if self.train_weight else []
        if self.train_bias:
            out.append(torch.einsum('b,bo->o', factors.to(g.dtype),
                                    self.bias_grad(g)))
        return out


class WeightLayerCapture(LayerCapture):
    """A layer ``y = W x + b`` (linear, convolution): ghost norms apply."""

    ghostable = True

    def weight_grads(self, a, g) -> torch.Tensor:
        """Per-sample weight gradients ``[B, *W.shape]``."""
        raise NotImplementedError

    def instantiate(self, a, g) -> List[torch.Tensor]:
        out = [self.weight_grads(a, g)] if self.train_weight else []
        if self.train_bias:
            out.append(self.bias_grad(g))
        return out


def is_identity(units: torch.Tensor, num_units: int) -> bool:
    """Sample i is unit i (no summing, no reordering needed)."""
    return num_units == units.numel() and bool(
        (units == torch.arange(num_units, device=units.device)).all())


def per_unit_positions(t: torch.Tensor, units: torch.Tensor,
                       num_units: int) -> torch.Tensor:
    """``[B, groups, T, d]`` -> ``[U, groups, k T, d]``: the positions of a
    unit's k samples side by side (zero-padded), so that the ghost norm of
    a unit is that of its summed gradient."""
    if is_identity(units, num_units):
        return t
    counts = torch.bincount(units, minlength=num_units)
    width = int(counts.max())
    out = t.new_zeros((num_units, width) + t.shape[1:])
    slot = torch.zeros_like(units)
    seen = {}
    for i, u in enumerate(units.tolist()):
        slot[i] = seen.get(u, 0)
        seen[u] = slot[i].item() + 1
    out[units, slot] = t
    # [U, k, groups, T, d] -> [U, groups, k * T, d]
    out = out.movedim(1, 2)
    return out.reshape(num_units, t.shape[1], width * t.shape[2],
                       *t.shape[3:])
