"""Per-sample gradients of a model's trainable parameters (Opacus hooks)."""
import contextlib
import threading
import warnings
from typing import Iterator, List

import torch
from opacus.grad_sample import GradSampleHooks
from torch import nn

from .errors import NotPrivateError

# The image tensor does not require grad, so torch notes that the first
# module's full backward hook sees output gradients only. That is all Opacus
# needs (it computes parameter gradients from them).
warnings.filterwarnings(
    'ignore', message='Full backward hook is firing when gradients are '
    'computed with respect to module outputs')


_private_forward_state = threading.local()
_original_iadd = torch.Tensor.__iadd__
#: The node that Opacus' full backward hooks put behind a module's output.
_HOOKED_OUTPUT = 'BackwardHookFunctionBackward'


def _iadd(self, other):
    if (getattr(_private_forward_state, 'active', 0)
            and type(self.grad_fn).__name__ == _HOOKED_OUTPUT):
        return torch.add(self, other)
    return _original_iadd(self, other)


@contextlib.contextmanager
def out_of_place_adds() -> Iterator[None]:
    """Inside the block, and in this thread only, ``out += other`` on the
    output of a hooked module becomes ``out = out + other``.

    Opacus attaches full backward hooks to every trainable module, and
    their outputs may not be modified in place (opacus#828), yet residual
    blocks write ``out += identity`` on a normalisation layer's output. Only
    that case, where the in-place add would raise, is rewritten; every other
    ``+=`` stays in place, and so does every ``+=`` in other threads and
    outside the block. The rewrite keeps values but not aliasing: code that
    reads the same tensor through another name after ``+=`` would see the
    value before the add, so the first private step compares the private
    forward's loss with the model's own
    (:func:`mmpose_dp.engine.loops.check_private_forward`). A
    TorchFunctionMode cannot do this: ``+=`` and an explicit ``add_`` reach
    it as the same ``add_``, and only ``+=`` stores its result back.
    """
    if torch.Tensor.__iadd__ is not _iadd:
        torch.Tensor.__iadd__ = _iadd
    depth = getattr(_private_forward_state, 'active', 0)
    _private_forward_state.active = depth + 1
    try:
        yield
    finally:
        _private_forward_state.active = depth


def _contiguous(sampler):
    """Opacus' conv grad samplers unfold the input with ``as_strided`` as if
    it were a contiguous NCHW tensor: on a channels-last input (e.g. after a
    ``permute``) the per-sample weight gradients come out wrong, silently."""
    def grad_sample(layer, activations, backprops):
        return sampler(layer, [a.contiguous() for a in activations],
                       backprops.contiguous())
    return grad_sample


def grad_samplers() -> dict:
    """Opacus' grad samplers (including those registered later, such as
    FrozenBatchNorm's), with the conv ones made layout-safe."""
    samplers = dict(GradSampleHooks.GRAD_SAMPLERS)
    for conv in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
        if conv in samplers:
            samplers[conv] = _contiguous(samplers[conv])
    return samplers


class _GradSampleHooks(GradSampleHooks):
    """Opacus' hooks with :func:`grad_samplers`."""

    @property
    def GRAD_SAMPLERS(self):
        return grad_samplers()


def disable_inplace_activations(model: nn.Module) -> List[str]:
    """Set ``inplace=False`` on every module that has it (ReLU, Dropout...).

    Returns the names of the modules changed. No parameter changes, so an
    optimizer built before this call stays valid.
    """
    changed = []
    for name, module in model.named_modules():
        if getattr(module, 'inplace', False) is True:
            module.inplace = False
            changed.append(name)
    return changed


def trainable_parameters(model: nn.Module) -> List[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


class PerSampleGradients:
    """Per-sample gradients from Opacus ``GradSampleHooks``, attached only
    for the private forward/backward.

    The hooks are attached when a private forward starts and removed once
    the per-sample gradients are popped, so no other forward (public data,
    public features, evaluation, ``tools/test.py``) can reach them, and the
    model keeps its class and state-dict keys.

    Args:
        model: the module whose trainable parameters are private.
        loss_reduction: ``'mean'`` if the loss averages per-sample losses
            over the batch, ``'sum'`` if it adds them.
    """

    def __init__(self, model: nn.Module, loss_reduction: str):
        if loss_reduction not in ('mean', 'sum'):
            raise ValueError(
                f"loss_reduction must be 'mean' or 'sum', got {loss_reduction}")
        self.model = model
        self.loss_reduction = loss_reduction
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self._hooks = None

    @property
    def attached(self) -> bool:
        return self._hooks is not None

    @contextlib.contextmanager
    def private_forward(self) -> Iterator[None]:
        """Run the private forward inside this block; the backward that
        follows (inside or after it) fills the per-sample gradients."""
        if self._hooks is None:
            # strict=False: mmpose_dp.models.validation refuses cross-sample
            # modules with a message that names the config fix.
            try:
                self._hooks = _GradSampleHooks(
                    self.model, batch_first=True,
                    loss_reduction=self.loss_reduction, strict=False)
            except Exception:
                _remove_partial_hooks(self.model)
                raise
        with out_of_place_adds():
            yield

    def pop(self, num_samples: int) -> List[torch.Tensor]:
        """Per-sample gradients ``[num_samples, *shape]`` of every trainable
        parameter, in :attr:`params` order; the hooks are then removed.

        Every per-sample gradient must have exactly ``num_samples`` rows (the
        micro-batch's samples): a module that folds windows or joints into
        the batch dimension would otherwise give one sample several clipped
        contributions. A parameter that took no part in the forward gets
        zeros; one that has an ordinary gradient but no per-sample one was
        reached outside the hooks and could not be clipped. Both mistakes are
        refused with :class:`NotPrivateError`.
        """
        try:
            return self._collect(num_samples)
        finally:
            self.detach()

    def _collect(self, num_samples: int) -> List[torch.Tensor]:
        out, folded, unhooked = [], [], []
        for name, p in zip(self.names, self.params):
            gs = getattr(p, 'grad_sample', None)
            if isinstance(gs, list):
                raise RuntimeError(
                    'several backward passes accumulated per-sample gradients '
                    'without a step; run one forward/backward per micro-batch')
            if gs is None:
                if p.grad is not None and bool(p.grad.ne(0).any()):
                    unhooked.append(name)
                gs = torch.zeros((num_samples, ) + p.shape, dtype=p.dtype,
                                 device=p.device)
            elif gs.shape[0] != num_samples:
                folded.append(f'{name} ({gs.shape[0]} rows)')
            out.append(gs)
        if folded:
            raise NotPrivateError(
                f'{len(folded)} parameter(s) got per-sample gradients with '
                f'another number of rows than the {num_samples} samples of '
                f'the micro-batch: {", ".join(folded[:8])}. Their modules '
                'fold something into the batch dimension (windowed '
                'attention, joints or tokens as samples), so one sample '
                'would contribute several clipped gradients (sensitivity '
                'k * C). Freeze these modules (requires_grad=False) or use '
                'a per-sample engine that keeps samples apart.')
        if unhooked:
            raise NotPrivateError(
                f'trainable parameter(s) {unhooked[:8]} got a gradient '
                'without a per-sample gradient (a module Opacus cannot '
                'hook), so it cannot be clipped. Freeze them '
                '(requires_grad=False) or replace the module.')
        if all(getattr(p, 'grad_sample', None) is None for p in self.params):
            raise RuntimeError(
                'no per-sample gradients were captured; run the forward '
                'inside PerSampleGradients.private_forward()')
        return out

    def detach(self) -> None:
        """Remove the hooks and every attribute they left on parameters."""
        if self._hooks is not None:
            self._hooks.cleanup()
            self._hooks = None


def _remove_partial_hooks(model: nn.Module) -> None:
    """Undo what a failed ``GradSampleHooks(...)`` left behind, so that the
    model can be hooked again."""
    for handle in getattr(model, 'autograd_grad_sample_hooks', []):
        handle.remove()
    if hasattr(model, 'autograd_grad_sample_hooks'):
        del model.autograd_grad_sample_hooks
