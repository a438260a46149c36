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
    #: Its per-sample gradients are written into rows of the engine's
    #: stacked buffers during the backward (on a CPU); False: stacked after
    #: it (gradients small enough, or computed by a kernel without ``out``).
    writes_rows = True

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
        #: Sample i is unit i (set per micro-batch by the engine, from the
        #: unit list: no tensor op per layer).
        self.identity = True
        #: Where instantiated gradients go: ``sink(layer, B, dtype)``
        #: returns the layer's rows of the engine's stacked buffers (views
        #: to write them into), or None to keep the tensors computed.
        self.sink = None
        #: Per-sample products as one batched kernel (a GPU, where each op
        #: is a launch) rather than the CPU's faster multiply-and-sum.
        self.one_kernel = False
        self.reset()

    @classmethod
    def supports(cls, module: nn.Module) -> bool:
        """Whether this rule is exact for ``module``'s settings."""
        return True

    def reset(self):
        self.calls = 0
        self.kept: List = []  # (a, g) for the book-keeping sum
        self.grads: Optional[List[torch.Tensor]] = None  # instantiated
        #: ``grads`` are rows of the engine's stacked buffers.
        self.stacked = False
        self.norm2: Optional[torch.Tensor] = None  # ghost norms of kept
        #: Per-unit norms ``[U]``, one per parameter, of gradients
        #: instantiated and dropped (summed with the stacked groups').
        self.norms: List[torch.Tensor] = []

    # -- the rule -----------------------------------------------------------
    def forward_state(self, output: torch.Tensor):
        """What one call's forward computed that :meth:`instantiate` can
        reuse (a norm's statistics), read from ``output`` at the forward
        hook; None: nothing."""
        return None

    def instantiate(self, a, g, out=None, state=None) -> List[torch.Tensor]:
        """Per-sample gradients ``[B, *shape]`` of the trainable params;
        with ``out`` (one tensor each) written into it and returned;
        ``state``: the call's :meth:`forward_state`."""
        raise NotImplementedError

    def ghost_sizes(self, a, g) -> Tuple[int, int, int]:
        """``(output positions, fan in, fan out)`` of one sample."""
        raise NotImplementedError

    def ghost_factors(self, a, g):
        """(A, G): per-sample factors of the weight gradient ``G^T A``,
        shapes ``[B, groups, T, in]`` and ``[B, groups, T, out]``."""
        raise NotImplementedError

    def bias_grad(self, g: torch.Tensor, out: Optional[torch.Tensor] = None
                  ) -> torch.Tensor:
        """Per-sample bias gradients ``[B, out]``, written into ``out`` if
        given."""
        raise NotImplementedError

    def kept_weight_sum(self, a, g, c) -> torch.Tensor:
        """``sum_b c_b * weight gradient of sample b`` (``c`` broadcast)."""
        raise NotImplementedError

    # -- per call -----------------------------------------------------------
    def _single_call(self) -> bool:
        """Called once this pass (a layer called again sums its calls'
        instantiated gradients, so it keeps neither inputs nor norm)."""
        return self.ghostable and self.calls == 1 and self.grads is None

    def _ghost(self, a: torch.Tensor, g: torch.Tensor) -> bool:
        """The ghost norm where it costs less than instantiating: per
        sample ``T^2 (in + out)`` against ``T in out`` operations, i.e.
        ``T (in + out) < in out`` (few output positions, many weights)."""
        if not self._single_call():
            return False
        positions, fan_in, fan_out = self.ghost_sizes(a, g)
        return positions * (fan_in + fan_out) < fan_in * fan_out

    def _keeps_inputs(self, a: torch.Tensor, g: torch.Tensor) -> bool:
        """Keep ``a`` and ``g`` for the clipped sum, rather than the
        instantiated per-sample gradients, where they hold fewer numbers
        (a low-resolution convolution whose ghost norm costs more than
        instantiating: HRNet-W32's 128-channel 3x3 convolutions at 16 x 16
        hold 2.25x fewer; their gradients were 252 MiB of rows at B = 8).
        The norm is then taken from gradients instantiated and dropped."""
        if not self._single_call():
            return False
        per_sample = sum(p.numel() for p in self.params)
        return a.numel() + g.numel() < a.shape[0] * per_sample

    def receive(self, a: torch.Tensor, g: torch.Tensor, state=None) -> None:
        """The gradient of one call's output arrived: work out the
        per-sample norm now, keep what the clipped sum needs."""
        if self._ghost(a, g):
            self.norm2 = self._ghost_norm2(a, g)
            self.kept.append((a, g))
            return
        if self._keeps_inputs(a, g):
            self.norms = [torch.linalg.vector_norm(
                self._per_unit(grad).flatten(1), dim=1)
                for grad in self.instantiate(a, g, state=state)]
            self.kept.append((a, g))
            return
        rows = None
        if self.grads is None and self.sink is not None:
            rows = self.sink(self, g.shape[0], g.dtype)
        if rows is not None and not self.kept:  # straight into the rows
            self.grads, self.stacked = self.instantiate(a, g, rows,
                                                        state), True
            return
        grads = self.instantiate(a, g, state=state)
        for ka, kg in self.kept:  # the layer was called again
            grads = [x + y for x, y in zip(grads, self.instantiate(ka, kg))]
        self.kept, self.norm2 = [], None
        if rows is not None:
            for row, grad in zip(rows, grads):
                row.copy_(grad)
            self.grads, self.stacked = rows, True
        elif self.grads is None:
            self.grads, self.stacked = grads, False
        elif self.stacked:  # another call: added in its stacked rows
            torch._foreach_add_(self.grads, grads)
        else:  # (own tensors may share memory with autograd's: no in-place)
            self.grads = [x + y for x, y in zip(self.grads, grads)]

    def _ghost_norm2(self, a, g) -> torch.Tensor:
        """Squared per-unit norms from ``sum_tt' (a_t a_t')(g_t g_t')``."""
        total = None
        if self.train_weight:
            A, G = self.ghost_factors(a, g)
            A = per_unit_positions(A, self.units, self.num_units,
                                   self.identity)
            G = per_unit_positions(G, self.units, self.num_units,
                                   self.identity)
            total = ((A @ A.transpose(2, 3)) *
                     (G @ G.transpose(2, 3))).sum((1, 2, 3)).double()
        if self.train_bias:
            bias = self._per_unit(self.bias_grad(g))
            square = bias.pow(2).sum(1).double()
            total = square if total is None else total + square
        return total

    def _per_unit(self, grad: torch.Tensor) -> torch.Tensor:
        """A unit's samples summed (the rows as they are when sample i is
        unit i)."""
        if self.identity:
            return grad
        per_unit = grad.new_zeros((self.num_units, ) + grad.shape[1:])
        return per_unit.index_add_(0, self.units, grad)

    # -- after the backward -------------------------------------------------
    def clipped_sums(self, factors: 'FactorsByDtype') -> List[torch.Tensor]:
        """``sum_b factors[b] * per-sample gradient[b]`` per parameter of a
        layer that kept its inputs: one ordinary weight gradient with its
        output gradient scaled per sample (book-keeping). Instantiated
        gradients are summed stacked (:mod:`.stacked`)."""
        if not self.kept:  # the layer took no part in the forward
            return [torch.zeros_like(p) for p in self.params]
        a, g = self.kept[0]
        f = factors(g.dtype)
        c = f.view(-1, *[1] * (g.dim() - 1))
        out = [self.kept_weight_sum(a, g, c)] if self.train_weight else []
        if self.train_bias:
            out.append(f @ self.bias_grad(g))
        return out


class WeightLayerCapture(LayerCapture):
    """A layer ``y = W x + b`` (linear, convolution): ghost norms apply."""

    ghostable = True

    def weight_grads(self, a, g, out: Optional[torch.Tensor] = None
                     ) -> torch.Tensor:
        """Per-sample weight gradients ``[B, *W.shape]``, written into
        ``out`` if given."""
        raise NotImplementedError

    def instantiate(self, a, g, out=None, state=None) -> List[torch.Tensor]:
        rows = iter(out or ())
        grads = ([self.weight_grads(a, g, next(rows, None))]
                 if self.train_weight else [])
        if self.train_bias:
            grads.append(self.bias_grad(g, next(rows, None)))
        return grads


def written_into(out: Optional[torch.Tensor], grad: torch.Tensor
                 ) -> torch.Tensor:
    """``grad`` copied into ``out`` (a backend that returns its own
    tensor), or ``grad`` itself without ``out``."""
    return grad if out is None else out.copy_(grad)


class FactorsByDtype:
    """Per-sample clip factors, cast once per dtype (not once per layer)."""

    def __init__(self, factors: torch.Tensor):
        self._cast = {factors.dtype: factors}

    def __call__(self, dtype: torch.dtype) -> torch.Tensor:
        if dtype not in self._cast:
            self._cast[dtype] = next(iter(self._cast.values())).to(dtype)
        return self._cast[dtype]


def is_identity(units: List[int]) -> bool:
    """Sample i is unit i (no summing, no reordering needed)."""
    return list(units) == list(range(len(units)))


def per_unit_positions(t: torch.Tensor, units: torch.Tensor,
                       num_units: int, identity: bool) -> torch.Tensor:
    """``[B, groups, T, d]`` -> ``[U, groups, k T, d]``: the positions of a
    unit's k samples side by side (zero-padded), so that the ghost norm of
    a unit is that of its summed gradient."""
    if identity:
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
