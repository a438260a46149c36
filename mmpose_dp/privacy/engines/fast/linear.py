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

    def bias_grad(self, g):
        return g.reshape(g.shape[0], -1, g.shape[-1]).sum(1)

    def weight_grads(self, a, g):
        A, G = self.ghost_factors(a, g)
        return torch.einsum('bgto,bgti->boi', G, A)

    def kept_weight_sum(self, a, g, c):
        A, G = self.ghost_factors(a, g * c)
        return torch.einsum('bgto,bgti->oi', G, A)
