"""The ``'fast'`` clipping engine (see the package docstring)."""
import contextlib
import time
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from ... import clipping
from ...errors import NotPrivateError
from ...per_sample import disable_inplace_activations
from ..base import ClippingEngine
from ..hooks import check_same_loss, same_random_draws
from .capture import FactorsByDtype, LayerCapture, is_identity
from .stacked import StackBuffer, StackedGradients, total_squared_norms
from .rules import LAYER_PARAMS, LAYER_RULES, layer_kind


#: Largest parameter (elements) with a row in the stacked buffers.
ROW_NUMEL = 1 << 18
#: Largest stacked buffer (bytes): far below glibc's mmap threshold (at
#: most 32 MiB), so a micro-batch's rows are heap memory the backward has
#: just freed (activations), not pages mapped and faulted in afresh.
ROW_BUFFER_BYTES = 8 << 20


class FastEngine(ClippingEngine):
    """Mixed ghost / instantiate-and-discard norms per layer and the
    clipped sum by book-keeping, in one forward and one backward."""

    name = 'fast'

    def __init__(self, model, batch_loss, loss_reduction):
        super().__init__(model, batch_loss, loss_reduction)
        self.layers: Dict[nn.Module, LayerCapture] = {}
        unsupported, owners, tied = [], {}, []
        for name, module in model.named_modules():
            own = [(n, p) for n, p in module.named_parameters(recurse=False)
                   if p.requires_grad]
            if not own:
                continue
            kind = layer_kind(module)
            if kind is None or {n for n, _ in own} - LAYER_PARAMS:
                unsupported.append(f'{name} ({type(module).__name__})')
                continue
            self.layers[module] = LAYER_RULES[kind](module)
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
        # Rows of the stacked per-sample gradients: the parameters of one
        # shape share a [B, k, *shape] buffer, one row each (model order),
        # which their layers write into during the backward.
        self._rows: Dict[tuple, Tuple[tuple, int]] = {}
        self._group_size: Dict[tuple, int] = {}
        # Only parameters of at most ROW_NUMEL elements: a large weight
        # mostly takes the ghost norm, and a row kept free for it would
        # cost B times its size.
        for layer in self.layers.values():
            for k, p in enumerate(layer.params):
                if p.numel() > ROW_NUMEL or not layer.writes_rows:
                    continue
                shape = tuple(p.shape)
                row = self._group_size.get(shape, 0)
                self._rows[(layer, k)] = (shape, row)
                self._group_size[shape] = row + 1
        self._buffers: Dict[tuple, StackBuffer] = {}
        #: Write per-sample gradients into their stacked rows during the
        #: backward (True: a lower peak, one copy per parameter) or stack
        #: them after it (False: one op per shape, more memory held at
        #: once); None: rows on a CPU, where memory is short and a copy
        #: costs no launch, stacking on a GPU.
        self.stack_rows: Optional[bool] = None
        #: A layer norm's per-sample weight gradient as one batched product
        #: (True: one launch) or a multiply-and-sum (False: several times
        #: faster on a CPU); None: batched on a GPU only.
        self.batched_products: Optional[bool] = None
        # Parameter order of the sums: the engine's (model) order.
        self._slots = []
        for p in self.params:
            layer = self.layers[owners[id(p)]]
            self._slots.append((layer, next(
                k for k, q in enumerate(layer.params) if q is p)))
        self._handles = []
        self._batch = None
        self._aranges: Dict[int, torch.Tensor] = {}
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

    def _stack_rows(self, layer, batch: int, dtype: torch.dtype
                    ) -> Optional[List[torch.Tensor]]:
        """The layer's rows of the stacked buffers (views ``[B, *shape]``,
        uninitialised) for it to write its per-sample gradients into, or
        None to keep them as computed (a parameter without a row, or a
        dtype or batch other than the buffer's). A shape's rows are split
        into buffers of at most :data:`ROW_BUFFER_BYTES`, allocated for
        this micro-batch only: kept from one to the next, they would hold
        memory through the forward, where the activations peak."""
        places = []
        for k, p in enumerate(layer.params):
            if (layer, k) not in self._rows:
                return None
            shape, row = self._rows[(layer, k)]
            per = max(1, ROW_BUFFER_BYTES // (batch * p.numel() *
                                              dtype.itemsize))
            key = (shape, row // per)
            buffer = self._buffers.get(key)
            if buffer is None:
                rows = min(per, self._group_size[shape] - key[1] * per)
                buffer = self._buffers[key] = StackBuffer(torch.empty(
                    (batch, rows) + shape, dtype=dtype, device=p.device))
            if (buffer.tensor.dtype != dtype
                    or buffer.tensor.shape[0] != batch):
                return None
            places.append((buffer, row % per, (layer, k)))
        for buffer, row, slot in places:
            buffer.slots[row] = slot
        return [buffer.tensor[:, row] for buffer, row, _ in places]

    def _units_tensor(self, units, identity: bool) -> torch.Tensor:
        """The units on the device; ``arange(B)`` made once per size (no
        host-to-device copy per micro-batch, which a recorded CUDA graph
        could not hold)."""
        device = self.params[0].device
        if not identity:
            return torch.tensor(units, device=device)
        if len(units) not in self._aranges:
            self._aranges[len(units)] = torch.arange(len(units),
                                                     device=device)
        return self._aranges[len(units)]

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
        state = layer.forward_state(output)
        if not output.requires_grad:
            # Nothing before this layer is trainable: start the graph here.
            leaf = output.detach().requires_grad_()
            output = leaf.clone()
            handle = leaf
        else:
            handle = output
        # The hook lives as long as the graph's nodes (until the pass
        # ends): it gives up its input when it fires, so an activation the
        # layer does not keep is freed during the backward, as without DP.
        held = [a, state]

        def receive(grad, layer=layer, held=held):
            a, state = held
            held.clear()
            layer.receive(a, grad.detach(), state)

        handle.register_hook(receive)
        return output

    def _clipped_sum(self, batch, units, max_grad_norm, unit_mask=None):
        self._batch = self.batch_loss.num_samples(batch)
        identity = is_identity(units)
        units_t = self._units_tensor(units, identity)
        num_units = max(units) + 1
        self._buffers = {}
        cpu = self.params[0].device.type == 'cpu'
        rows = self.stack_rows if self.stack_rows is not None else cpu
        batched = (self.batched_products
                   if self.batched_products is not None else not cpu)
        for layer in self.layers.values():
            layer.reset()
            layer.units, layer.num_units = units_t, num_units
            layer.identity = identity
            layer.sink = self._stack_rows if rows else None
            layer.one_kernel = batched
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
            loss = loss.detach()  # the graph (its nodes and hooks) goes
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
        stacks = StackedGradients(self.layers.values(), self._buffers)
        self._buffers = {}
        norms = scale * total_squared_norms(
            self.layers.values(), stacks, units_t, num_units,
            identity).sqrt()
        unit_factors = clipping.clip_factors(norms, max_grad_norm)
        if unit_mask is not None:  # padding units: factor 0
            unit_factors = unit_factors * unit_mask
        # Each sample its unit's factor.
        factors = FactorsByDtype(scale * (
            unit_factors if identity else unit_factors[units_t]))
        start = self._tick('norms', start)
        sums = stacks.clipped_sums(factors)
        for layer in self.layers.values():
            if layer not in stacks.layers:
                sums.update(((layer, k), s) for k, s in
                            enumerate(layer.clipped_sums(factors)))
        self._tick('clipped_sum', start)
        out = [sums[slot] for slot in self._slots]
        for layer in self.layers.values():
            layer.reset()
        return out, loss
