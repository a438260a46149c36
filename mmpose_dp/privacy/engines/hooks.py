"""Per-sample gradients from Opacus hooks, then clipping (``'hooks'``)."""
import contextlib
from typing import List

import torch

from ..errors import NotPrivateError
from ..per_sample import (PerSampleGradients, disable_inplace_activations,
                          grad_samplers)
from .base import ClippingEngine, clip_units


def check_same_loss(engine: ClippingEngine, private_loss: float, batch,
                    inplace: List[str], rtol: float = 1e-4) -> None:
    """Refuse a model whose private forward computes another loss than its
    own forward on the same micro-batch (stock in-place activations, no
    per-sample machinery): a module that reads a tensor through another
    name after changing it in place would then train another network than
    the one evaluated."""
    with torch.no_grad(), same_random_draws(), inplace_activations(
            engine.model, inplace):
        reference = float(engine.batch_loss.loss(engine.model, batch))
    if abs(private_loss - reference) > rtol * max(abs(reference), 1e-8):
        raise NotPrivateError(
            f'the private forward gives loss {private_loss:.6g}, the '
            f"model's own forward {reference:.6g} on the same batch: a "
            'module relies on in-place aliasing (e.g. `y = x[0]; y += z` '
            f'and then reading x[0]), which the {engine.name!r} engine '
            "changes. Use privacy.engine='vmap', or rewrite that forward")


@contextlib.contextmanager
def same_random_draws(seed: int = 0):
    """Run a block with seeded torch generators, then restore them."""
    devices = ([torch.cuda.current_device()]
               if torch.cuda.is_available() else [])
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def inplace_activations(model, names: List[str]):
    """Switch the in-place activations ``names`` back on for the block."""
    modules = [model.get_submodule(n) for n in names]
    for m in modules:
        m.inplace = True
    try:
        yield
    finally:
        for m in modules:
            m.inplace = False


class HooksEngine(ClippingEngine):
    """Opacus ``GradSampleHooks``, attached only for the private forward and
    backward: every per-sample gradient is materialised, checked (one row per
    sample), summed per unit, clipped and summed.

    The hooks need in-place activations off and ``+=`` onto hooked outputs
    out of place; the first micro-batch's loss is compared with the model's
    own loss (stock in-place semantics, no hooks) on the same batch, and a
    model whose forward relies on in-place aliasing is refused.
    """

    name = 'hooks'

    def __init__(self, model, batch_loss, loss_reduction):
        super().__init__(model, batch_loss, loss_reduction)
        self.per_sample = PerSampleGradients(model, loss_reduction)
        self.inplace = disable_inplace_activations(model)
        self.functorch_modules = functorch_modules(model)
        self._checked = False

    @property
    def busy(self) -> bool:
        return self.per_sample.attached

    def _clipped_sum(self, batch, units, max_grad_norm, unit_mask=None):
        try:
            with (contextlib.nullcontext() if self._checked
                  else same_random_draws()):
                with self.per_sample.private_forward():
                    loss = self.batch_loss.loss(self.model, batch)
                loss.backward()
            grads = self.per_sample.pop(len(units))
        except (TypeError, RuntimeError, AttributeError, IndexError) as err:
            # e.g. Opacus' functorch fallback on a module that returns a
            # tuple, its activation capture on a module called with a tuple
            # (PVT's blocks get (x, hw_shape)), or an IndexError in its
            # backward hook (PVTv2): these hooks cannot give per-sample
            # gradients here.
            raise NotPrivateError(
                f'Opacus hooks could not compute per-sample gradients of '
                f'this model ({type(err).__name__}: {err}); use '
                "privacy.engine='vmap'") from err
        finally:
            self.per_sample.detach()
            for p in self.params:
                p.grad = None  # the unclipped batch gradient is never used
        if not self._checked:
            self.check_forward(float(loss), batch)
            self._checked = True
        return (clip_units(grads, units, max_grad_norm, unit_mask),
                loss.detach())

    def check_forward(self, private_loss: float, batch) -> None:
        check_same_loss(self, private_loss, batch, self.inplace)

def functorch_modules(model) -> List[str]:
    """Modules that Opacus hands to its functorch fallback (trainable
    parameters of their own and no grad sampler): their whole subtree's
    per-sample gradients come from one vmapped call of their forward."""
    samplers = grad_samplers()
    found = []

    def visit(name, module):
        if any(p.requires_grad for p in module.parameters(recurse=False)):
            if type(module) not in samplers:
                found.append(f'{name or "(model)"} ({type(module).__name__})')
                return
        for child_name, child in module.named_children():
            visit(f'{name}.{child_name}' if name else child_name, child)

    visit('', model)
    return found
