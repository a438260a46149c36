"""Per-sample gradients of a model's trainable parameters (Opacus hooks)."""
import contextlib
import warnings
from typing import Iterator, List

import torch
from opacus.grad_sample import GradSampleHooks
from torch import nn

# The image tensor does not require grad, so torch notes that the first
# module's full backward hook sees output gradients only. That is all Opacus
# needs (it computes parameter gradients from them).
warnings.filterwarnings(
    'ignore', message='Full backward hook is firing when gradients are '
    'computed with respect to module outputs')


@contextlib.contextmanager
def out_of_place_adds() -> Iterator[None]:
    """Make ``tensor += other`` out of place inside the block.

    Opacus attaches full backward hooks to every trainable module; their
    outputs may not be modified in place (opacus#828), yet residual blocks
    write ``out += identity`` on a normalisation layer's output. Rebinding
    ``+=`` to ``out = out + identity`` changes no value, only aliasing, so
    stock MMPose modules work unchanged. Indexed writes such as
    ``x[i] += v`` stay correct because Python stores the result back.
    """
    original = torch.Tensor.__iadd__

    def add(self, other):
        return torch.add(self, other)

    torch.Tensor.__iadd__ = add
    try:
        yield
    finally:
        torch.Tensor.__iadd__ = original


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
        self.params = trainable_parameters(model)
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
            self._hooks = GradSampleHooks(
                self.model, batch_first=True,
                loss_reduction=self.loss_reduction, strict=False)
        with out_of_place_adds():
            yield

    def pop(self) -> List[torch.Tensor]:
        """Per-sample gradients ``[batch, *shape]`` of every trainable
        parameter, in :attr:`params` order; the hooks are then removed.

        A parameter that took no part in the forward gets zeros. A
        parameter that has an ordinary gradient but no per-sample one was
        reached outside the hooks: that gradient could not be clipped, so it
        is refused.
        """
        try:
            return self._collect()
        finally:
            self.detach()

    def _collect(self) -> List[torch.Tensor]:
        batch = None
        for p in self.params:
            gs = getattr(p, 'grad_sample', None)
            if isinstance(gs, list):
                raise RuntimeError(
                    'several backward passes accumulated per-sample gradients '
                    'without a step; run one forward/backward per micro-batch')
            if gs is not None:
                batch = gs.shape[0]
                break
        if batch is None:
            raise RuntimeError(
                'no per-sample gradients were captured; run the forward '
                'inside PerSampleGradients.private_forward()')
        out = []
        for p in self.params:
            gs = getattr(p, 'grad_sample', None)
            if gs is None:
                if p.grad is not None and bool(p.grad.ne(0).any()):
                    raise RuntimeError(
                        f'a trainable parameter of shape {tuple(p.shape)} got '
                        'a gradient without a per-sample gradient; it cannot '
                        'be clipped. Freeze it or use a module Opacus supports.')
                gs = torch.zeros((batch, ) + p.shape, dtype=p.dtype,
                                 device=p.device)
            out.append(gs)
        return out

    def detach(self) -> None:
        """Remove the hooks and every attribute they left on parameters."""
        if self._hooks is not None:
            self._hooks.cleanup()
            self._hooks = None
