"""Per-layer clipping without all per-sample gradients at once (``'fast'``).

One forward and one backward, as book-keeping clipping (Bu et al., ICML
2023) does, with the per-layer choice of mixed ghost clipping (Bu et al.,
NeurIPS 2022):

* the weights do not require grad during the private pass, so the backward
  computes only the gradients w.r.t. activations (no weight gradients,
  which would be discarded anyway) and stops at the earliest trainable
  layer;
* each supported layer keeps its input ``a`` (forward hook) and receives
  the gradient ``g`` of its output (tensor hook). There it either
  instantiates its per-sample gradients (``B x p``) and drops ``a`` and
  ``g``, or keeps ``a`` and ``g`` for the ghost norm (``sum_tt' (a_t a_t')
  (g_t g_t')``) and a later product: whichever holds fewer numbers, so
  high-resolution convolutions (many positions, few weights) instantiate
  and low-resolution ones (few positions, many weights) keep;
* from the per-sample norms, the clip factors; then per layer one batched
  product gives the clipped sum (``sum_b c_b a_b^T g_b``).

Supported trainable layers: ``Linear``, ``Conv1d/2d`` (any stride,
padding, dilation, groups, so depthwise convolutions cost no dense
convolution), ``ConvTranspose2d`` (as the adjoint of a convolution),
``GroupNorm``, ``LayerNorm`` and
:class:`~mmpose_dp.models.FrozenBatchNorm`'s affine map, matched by exact
type (:data:`FAST_LAYERS`, :func:`register_fast_layer`). A model with
another trainable layer (a subclass too), parameters held on a container or
shared by two layers is refused (:class:`NotPrivateError`; ``'auto'`` then
tries the next engine).
"""
import contextlib
import time
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .. import clipping
from ..errors import NotPrivateError
from ..per_sample import disable_inplace_activations
from .base import ClippingEngine
from .hooks import check_same_loss, same_random_draws


#: Trainable layer types the engine computes exactly, by *exact* type: a
#: subclass may change the forward (MMCV's ``ConvWS2d`` standardises its
#: weight, MMPretrain's ``LayerNorm2d`` permutes), so it is refused unless
#: registered itself (:func:`register_fast_layer`) with the rule of the
#: layer whose math its forward is.
FAST_LAYERS: Dict[type, str] = {
    nn.Linear: 'linear',
    nn.Conv1d: 'conv',
    nn.Conv2d: 'conv',
    nn.ConvTranspose2d: 'conv_transpose',
    nn.GroupNorm: 'group_norm',
    nn.LayerNorm: 'layer_norm',
}
#: The only parameter names a supported layer may own.
_LAYER_PARAMS = {'weight', 'bias'}


def register_fast_layer(layer_type: type, kind: str) -> None:
    """Declare that ``layer_type``'s forward is exactly that of ``kind``
    (``'linear'``, ``'conv'``, ``'conv_transpose'``, ``'group_norm'``,
    ``'layer_norm'``, or ``'frozen_batch_norm'``: a per-channel affine map
    after a fixed normalisation exposed as ``normalise()``)."""
    kinds = set(FAST_LAYERS.values()) | {'frozen_batch_norm'}
    if kind not in kinds:
        raise ValueError(f'kind must be one of {sorted(kinds)}, got {kind!r}')
    FAST_LAYERS[layer_type] = kind


def _layer_kind(module: nn.Module) -> Optional[str]:
    kind = FAST_LAYERS.get(type(module))
    if kind == 'conv' and module.padding_mode != 'zeros':
        return None
    return kind


def _conv_weight_grad(module: nn.Module, a: torch.Tensor, g: torch.Tensor,
                      per_sample: bool) -> torch.Tensor:
    """The weight gradient of a convolution from its input ``a`` and output
    gradient ``g`` (a transposed convolution as the adjoint of a
    convolution: input ``g``, output gradient ``a``), summed over the batch
    or, with ``per_sample``, one per sample by folding the batch into the
    groups (the backend's weight-gradient kernel, no unfolded input)."""
    transposed = isinstance(module, nn.ConvTranspose2d)
    x, dy = (g, a) if transposed else (a, g)
    conv_weight = (torch.nn.grad.conv1d_weight if x.dim() == 3 else
                   torch.nn.grad.conv2d_weight)
    shape = module.weight.shape  # convT: [in, out/groups, k...]
    rows, cols = shape[0], shape[1]
    groups = module.groups
    B = x.shape[0]
    if per_sample:
        x = x.reshape(1, B * x.shape[1], *x.shape[2:])
        dy = dy.reshape(1, B * dy.shape[1], *dy.shape[2:])
        weight = conv_weight(x, (B * rows, cols) + tuple(shape[2:]), dy,
                             stride=module.stride, padding=module.padding,
                             dilation=module.dilation, groups=B * groups)
        return weight.view((B, ) + tuple(shape))
    return conv_weight(x, tuple(shape), dy, stride=module.stride,
                       padding=module.padding, dilation=module.dilation,
                       groups=groups)


class _Layer:
    """One trainable layer's capture during a private pass."""

    def __init__(self, module: nn.Module, kind: str):
        self.module = module
        self.kind = kind
        self.params = [p for p in module.parameters(recurse=False)
                       if p.requires_grad]
        # Decided once: requires_grad is switched off during the pass.
        trainable = {id(p) for p in self.params}
        self.train_weight = id(getattr(module, 'weight', None)) in trainable
        self.train_bias = id(getattr(module, 'bias', None)) in trainable
        self.units: Optional[torch.Tensor] = None
        self.num_units = 0
        self.reset()

    def reset(self):
        self.calls = 0
        self.kept: List = []  # (a, g) for the book-keeping sum
        self.grads: Optional[List[torch.Tensor]] = None  # instantiated
        self.norm2: Optional[torch.Tensor] = None  # ghost norms of kept

    # -- per-sample quantities ---------------------------------------------
    def _unfolded(self, a: torch.Tensor) -> torch.Tensor:
        """Conv input as ``[B, groups, C_in/groups * k, T]`` (for a
        transposed convolution: its output gradient, unfolded as the input
        of the convolution it is the adjoint of)."""
        m = self.module
        if a.dim() == 3:  # Conv1d as a 2d conv of height 1
            a = a.unsqueeze(2)
            kernel, dilation = (1, ) + m.kernel_size, (1, ) + m.dilation
            padding, stride = (0, ) + m.padding, (1, ) + m.stride
        else:
            kernel, dilation, padding, stride = (m.kernel_size, m.dilation,
                                                 m.padding, m.stride)
        cols = F.unfold(a, kernel, dilation=dilation, padding=padding,
                        stride=stride)
        return cols.view(a.shape[0], m.groups, -1, cols.shape[-1])

    def _ghost_factors(self, a: torch.Tensor, g: torch.Tensor):
        """(A, G): per-sample factors of the weight gradient ``G^T A``,
        shapes ``[B, groups, T, in]`` and ``[B, groups, T, out]``."""
        m = self.module
        if self.kind == 'linear':
            return (a.reshape(a.shape[0], 1, -1, a.shape[-1]),
                    g.reshape(g.shape[0], 1, -1, g.shape[-1]))
        B, groups = g.shape[0], m.groups
        if self.kind == 'conv_transpose':
            x, dy, rows = g, a, m.in_channels
        else:
            x, dy, rows = a, g, m.out_channels
        A = self._unfolded(x).transpose(2, 3)
        G = dy.reshape(B, groups, rows // groups, -1).transpose(2, 3)
        return A, G

    def _bias_grad(self, g: torch.Tensor) -> torch.Tensor:
        if self.kind == 'linear':
            return g.reshape(g.shape[0], -1, g.shape[-1]).sum(1)
        return g.reshape(g.shape[0], g.shape[1], -1).sum(-1)

    def _normalised(self, a: torch.Tensor) -> torch.Tensor:
        m = self.module
        if self.kind == 'group_norm':
            return F.group_norm(a, m.num_groups, eps=m.eps)
        if self.kind == 'layer_norm':
            return F.layer_norm(a, m.normalized_shape, eps=m.eps)
        return m.normalise(a)

    def _affine_grads(self, a, g) -> List[torch.Tensor]:
        """Per-sample gradients of a norm layer's weight and bias."""
        m = self.module
        x_hat = self._normalised(a)
        if self.kind == 'layer_norm':
            dims = tuple(range(1, a.dim() - len(m.normalized_shape)))
        else:  # per channel (dim 1)
            dims = tuple(range(2, a.dim()))
        weight = (g * x_hat).sum(dims) if dims else g * x_hat
        bias = g.sum(dims) if dims else g
        return ([weight] if self.train_weight else []) + (
            [bias] if self.train_bias else [])

    def _instantiate(self, a, g) -> List[torch.Tensor]:
        """Per-sample gradients ``[B, *shape]`` of the layer's trainable
        parameters."""
        if self.kind not in ('linear', 'conv', 'conv_transpose'):
            return self._affine_grads(a, g)
        out = []
        if self.train_weight:
            if self.kind == 'linear':
                A, G = self._ghost_factors(a, g)
                out.append(torch.einsum('bgto,bgti->boi', G, A))
            else:
                out.append(_conv_weight_grad(self.module, a, g, True))
        if self.train_bias:
            out.append(self._bias_grad(g))
        return out

    def _ghost(self, a: torch.Tensor, g: torch.Tensor) -> bool:
        """The ghost norm where it costs less than instantiating: per
        sample ``T^2 (in + out)`` against ``T in out`` operations, i.e.
        ``T (in + out) < in out`` (few output positions, many weights)."""
        if self.kind not in ('linear', 'conv', 'conv_transpose') or \
                self.calls > 1 or self.grads is not None:
            return False
        m = self.module
        if self.kind == 'linear':
            positions = g[0].numel() // g.shape[-1]
            fan_in, fan_out = m.in_features, m.out_features
        else:
            positions = (a if self.kind == 'conv_transpose' else g)[0, 0]\
                .numel()
            fan_in = m.weight[0].numel()
            fan_out = m.weight.shape[0] // m.groups
        return positions * (fan_in + fan_out) < fan_in * fan_out

    def receive(self, a: torch.Tensor, g: torch.Tensor) -> None:
        """The gradient of one call's output arrived: work out the
        per-sample norm now, keep what the clipped sum needs."""
        if self._ghost(a, g):
            self.norm2 = self._ghost_norm2(a, g)
            self.kept.append((a, g))
            return
        grads = self._instantiate(a, g)
        for ka, kg in self.kept:  # the layer was called again
            grads = [x + y for x, y in zip(grads, self._instantiate(ka, kg))]
        self.kept, self.norm2 = [], None
        self.grads = grads if self.grads is None else [
            x + y for x, y in zip(self.grads, grads)]

    def _ghost_norm2(self, a, g) -> torch.Tensor:
        """Squared per-unit norms from ``sum_tt' (a_t a_t')(g_t g_t')``."""
        total = torch.zeros(self.num_units, dtype=torch.float64,
                            device=a.device)
        if self.train_weight:
            A, G = self._ghost_factors(a, g)
            A = _per_unit_positions(A, self.units, self.num_units)
            G = _per_unit_positions(G, self.units, self.num_units)
            total += ((A @ A.transpose(2, 3)) *
                      (G @ G.transpose(2, 3))).sum((1, 2, 3)).double()
        if self.train_bias:
            bias = self._bias_grad(g)
            per_unit = bias.new_zeros((self.num_units, ) + bias.shape[1:])
            per_unit.index_add_(0, self.units, bias)
            total += per_unit.pow(2).sum(1).double()
        return total

    # -- after the backward --------------------------------------------------
    def squared_norms(self) -> torch.Tensor:
        """Squared norm of each unit's gradient of this layer's parameters
        (a unit's samples summed first)."""
        if self.norm2 is not None:
            return self.norm2
        total = torch.zeros(self.num_units, dtype=torch.float64,
                            device=self.units.device)
        for grad in self.grads or ():
            if not _is_identity(self.units, self.num_units):
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
        m = self.module
        out = []
        if not self.kept:  # the layer took no part in the forward
            return [torch.zeros_like(p) for p in self.params]
        a, g = self.kept[0]
        c = factors.to(g.dtype).view(-1, *[1] * (g.dim() - 1))
        if self.train_weight:
            if self.kind == 'linear':
                A, G = self._ghost_factors(a, g * c)
                out.append(torch.einsum('bgto,bgti->oi', G, A))
            elif self.kind == 'conv_transpose':
                out.append(_conv_weight_grad(m, a * c, g, False))
            else:
                out.append(_conv_weight_grad(m, a, g * c, False))
        if self.train_bias:
            out.append(torch.einsum('b,bo->o', factors.to(g.dtype),
                                    self._bias_grad(g)))
        return out


def _is_identity(units: torch.Tensor, num_units: int) -> bool:
    """Sample i is unit i (no summing, no reordering needed)."""
    return num_units == units.numel() and bool(
        (units == torch.arange(num_units, device=units.device)).all())


def _per_unit_positions(t: torch.Tensor, units: torch.Tensor,
                        num_units: int) -> torch.Tensor:
    """``[B, groups, T, d]`` -> ``[U, groups, k T, d]``: the positions of a
    unit's k samples side by side (zero-padded), so that the ghost norm of
    a unit is that of its summed gradient."""
    if _is_identity(units, num_units):
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


class FastEngine(ClippingEngine):
    """Mixed ghost / instantiate-and-discard norms per layer and the
    clipped sum by book-keeping, in one forward and one backward."""

    name = 'fast'

    def __init__(self, model, batch_loss, loss_reduction):
        super().__init__(model, batch_loss, loss_reduction)
        self.layers: Dict[nn.Module, _Layer] = {}
        unsupported, owners, tied = [], {}, []
        for name, module in model.named_modules():
            own = [(n, p) for n, p in module.named_parameters(recurse=False)
                   if p.requires_grad]
            if not own:
                continue
            kind = _layer_kind(module)
            if kind is None or {n for n, _ in own} - _LAYER_PARAMS:
                unsupported.append(f'{name} ({type(module).__name__})')
                continue
            self.layers[module] = _Layer(module, kind)
            for n, p in own:
                if id(p) in owners:
                    tied.append(f'{name}.{n}')
                owners[id(p)] = module
        if unsupported:
            raise NotPrivateError(
                f"the 'fast' engine supports exactly Linear, Conv1d/2d, "
                'ConvTranspose2d, GroupNorm, LayerNorm and FrozenBatchNorm '
                '(owning only weight and bias; subclasses, which may change '
                f'the forward, are refused); trainable {unsupported[:6]} '
                "are not. Use privacy.engine='hooks' or 'vmap'")
        if tied:
            raise NotPrivateError(
                f"the 'fast' engine needs each trainable parameter in one "
                f'layer; {tied[:6]} are shared by several (tied weights), '
                "whose per-sample norm is not the sum of the layers'. Use "
                "privacy.engine='vmap'")
        # Parameter order of the sums: the engine's (model) order.
        self._slots = []
        for p in self.params:
            layer = self.layers[owners[id(p)]]
            self._slots.append((layer, next(
                k for k, q in enumerate(layer.params) if q is p)))
        self._handles = []
        self._batch = None
        # Tensor hooks on outputs must see them before any in-place change.
        self.inplace = disable_inplace_activations(model)
        self._checked = False
        #: Seconds spent per phase (forward, backward with the per-layer
        #: work done in hooks, norms, clipped sum), summed over calls; for
        #: benchmarks (set ``synchronize`` to ``torch.cuda.synchronize``).
        self.timings: Dict[str, float] = {}
        self.synchronize = lambda: None

    def _tick(self, phase: str, start: float) -> float:
        self.synchronize()
        now = time.perf_counter()
        self.timings[phase] = self.timings.get(phase, 0.0) + now - start
        return now

    @property
    def busy(self) -> bool:
        return bool(self._handles)

    def _forward_hook(self, module, args, output):
        layer = self.layers[module]
        layer.calls += 1
        a = args[0].detach()
        if a.shape[0] != self._batch:
            raise NotPrivateError(
                f'{type(module).__name__} got an input with '
                f'{a.shape[0] / self._batch:.3g} rows per sample of the '
                'micro-batch: the model folds something into the batch '
                'dimension, so one sample would contribute several clipped '
                "gradients. Use privacy.engine='vmap'")
        if not output.requires_grad:
            # Nothing before this layer is trainable: start the graph here.
            leaf = output.detach().requires_grad_()
            output = leaf.clone()
            handle = leaf
        else:
            handle = output
        def receive(grad, layer=layer, a=a):
            layer.receive(a, grad.detach())

        handle.register_hook(receive)
        return output

    def _clipped_sum(self, batch, units, max_grad_norm):
        self._batch = self.batch_loss.num_samples(batch)
        units_t = torch.tensor(units, device=self.params[0].device)
        num_units = int(units_t.max()) + 1
        for layer in self.layers.values():
            layer.reset()
            layer.units, layer.num_units = units_t, num_units
        for p in self.params:
            p.requires_grad_(False)
        start = time.perf_counter()
        try:
            self._handles = [m.register_forward_hook(self._forward_hook)
                             for m in self.layers]
            with (contextlib.nullcontext() if self._checked
                  else same_random_draws()):
                loss = self.batch_loss.loss(self.model, batch)
            start = self._tick('forward', start)
            loss.backward()
            start = self._tick('backward', start)
        finally:
            for handle in self._handles:
                handle.remove()
            self._handles = []
            for p in self.params:
                p.requires_grad_(True)
        if not self._checked:
            check_same_loss(self, float(loss.detach()), batch, self.inplace)
            self._checked = True
        # A batch-mean loss gives output gradients 1/B of each sample's
        # own: per-sample gradients are `scale` times what the layers saw.
        scale = self._batch if self.loss_reduction == 'mean' else 1
        norms = scale * sum(layer.squared_norms()
                            for layer in self.layers.values()).sqrt()
        unit_factors = clipping.clip_factors(norms, max_grad_norm)
        factors = scale * unit_factors[units_t]  # each sample its unit's
        start = self._tick('norms', start)
        sums = {layer: layer.clipped_sums(factors)
                for layer in self.layers.values()}
        self._tick('clipped_sum', start)
        out = [sums[layer][k] for layer, k in self._slots]
        for layer in self.layers.values():
            layer.reset()
        return out, loss.detach()
