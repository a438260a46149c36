"""Per-layer clipping without all per-sample gradients at once (``'fast'``).

One forward and one backward, as book-keeping clipping (Bu et al., ICML
2023) does, with the per-layer choice of mixed ghost clipping (Bu et al.,
NeurIPS 2022):

* the weights do not require grad during the private pass, so the backward
  computes only the gradients w.r.t. activations (no weight gradients,
  which would be discarded anyway) and stops at the earliest trainable
  layer;
* each supported layer keeps its input ``a`` (forward hook) and receives
  the gradient ``g`` of its output (tensor hook). There it takes one of
  three ways: the ghost norm (``sum_tt' (a_t a_t') (g_t g_t')``) where it
  costs fewer operations than instantiating (few positions, many weights),
  keeping ``a`` and ``g`` for a later product; else it instantiates its
  per-sample gradients (``B x p``) for the norm and keeps whichever holds
  fewer numbers: the gradients (rows of per-shape buffers allocated for
  the micro-batch, :mod:`.stacked`; high-resolution convolutions, few
  weights) or ``a`` and ``g`` (the gradients dropped at once;
  low-resolution convolutions the ghost norm would cost more for);
* from the per-sample norms, the clip factors; then the clipped sum: one
  batched product per layer that kept ``a`` and ``g`` (``sum_b c_b a_b^T
  g_b``), one per buffer of kept gradients.

One file per layer family, each a :class:`~.capture.LayerCapture` rule
registered under a kind (:func:`~.rules.register_layer_rule`):
:mod:`.linear` (``Linear``), :mod:`.conv` (``Conv1d/2d``, any stride,
padding, dilation, groups, so depthwise convolutions cost no dense
convolution; ``ConvTranspose2d`` as the adjoint of a convolution),
:mod:`.norms` (``GroupNorm``, ``LayerNorm`` and
:class:`~mmpose_dp.models.FrozenBatchNorm`'s affine map). Layer types map to
kinds by *exact* type (:data:`~.rules.FAST_LAYERS`,
:func:`~.rules.register_fast_layer`). A model with another trainable layer
(a subclass too), parameters held on a container or shared by two layers is
refused (:class:`NotPrivateError`; ``'auto'`` then tries the next engine).
A new layer family is one file with its rule plus its registration.
"""
from . import conv, linear, norms  # noqa: F401  (register their rules)
from .engine import FastEngine
from .rules import (FAST_LAYERS, LAYER_RULES, register_fast_layer,
                    register_layer_rule)

__all__ = ['FAST_LAYERS', 'FastEngine', 'LAYER_RULES', 'register_fast_layer',
           'register_layer_rule']
