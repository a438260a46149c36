"""The fast engine's rule for ``nn.Linear`` (any leading dimensions)."""
import torch

from .capture import WeightLayerCapture
from .rules import register_layer_rule


@register_layer_rule('linear')
class LinearCapture(WeightLayerCapture):
    """``y = x W^T + b`` over positions ``T`` (all dims but batch and the
    last): per sample, ``dW = sum_t g_t a_t^T``."""

    def ghost_sizes(self, a, g):
        m = self.module
        return g[0].numel() // g.shape[-1], m.in_features, m.out_features

    def ghost_factors(self, a, g):
        return (a.reshape(a.shape[0], 1, -1, a.shape[-1]),
                g.reshape(g.shape[0], 1, -1, g.shape[-1]))

    def bias_grad(self, g, out=None):
        flat = g.reshape(g.shape[0], -1, g.shape[-1])
        return flat.sum(1) if out is None else torch.sum(flat, 1, out=out)

    def weight_grads(self, a, g, out=None):
        # [B, out, T] @ [B, T, in]: one batched product, straight into the
        # row when given.
        B = g.shape[0]
        G = g.reshape(B, -1, g.shape[-1]).transpose(1, 2)
        A = a.reshape(B, -1, a.shape[-1])
        return torch.bmm(G, A) if out is None else torch.bmm(G, A, out=out)

    def kept_weight_sum(self, a, g, c):
        A, G = self.ghost_factors(a, g * c)
        return torch.einsum('bgto,bgti->oi', G, A)
