"""The fast engine's rules for convolutions: ``Conv1d/2d`` (zero padding;
any stride, dilation and groups) and ``ConvTranspose2d``, as the adjoint
of a convolution (input: its output gradient; output gradient: its
input)."""
import torch
import torch.nn.functional as F
from torch import nn

from .capture import WeightLayerCapture, written_into
from .rules import register_layer_rule


def conv_weight_grad(module: nn.Module, a: torch.Tensor, g: torch.Tensor,
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


@register_layer_rule('conv')
class ConvCapture(WeightLayerCapture):
    """``Conv1d`` / ``Conv2d`` with zero padding."""

    transposed = False

    def __init__(self, module):
        super().__init__(module)
        #: A 1x1 convolution with stride 1, no padding and one group: per
        #: sample a matrix product over positions, which a batched GEMM
        #: computes several times faster on a CPU than the backend's
        #: grouped weight-gradient kernel (and writes into a row).
        self.pointwise = (not self.transposed and module.groups == 1
                          and all(k == 1 for k in module.kernel_size)
                          and all(s == 1 for s in module.stride)
                          and all(p == 0 for p in module.padding))

    @classmethod
    def supports(cls, module):
        return module.padding_mode == 'zeros'

    def _unfolded(self, a: torch.Tensor) -> torch.Tensor:
        """Conv input as ``[B, groups, C_in/groups * k, T]`` (for a
        transposed convolution: its output gradient, unfolded as the input
        of the convolution it is the adjoint of)."""
        m = self.module
        if self.pointwise:  # the columns are the input itself
            return a.reshape(a.shape[0], 1, a.shape[1], -1)
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

    def ghost_sizes(self, a, g):
        m = self.module
        positions = (a if self.transposed else g)[0, 0].numel()
        return positions, m.weight[0].numel(), m.weight.shape[0] // m.groups

    def ghost_factors(self, a, g):
        m = self.module
        B, groups = g.shape[0], m.groups
        if self.transposed:
            x, dy, rows = g, a, m.in_channels
        else:
            x, dy, rows = a, g, m.out_channels
        A = self._unfolded(x).transpose(2, 3)
        G = dy.reshape(B, groups, rows // groups, -1).transpose(2, 3)
        return A, G

    def bias_grad(self, g, out=None):
        flat = g.reshape(g.shape[0], g.shape[1], -1)
        return flat.sum(-1) if out is None else torch.sum(flat, -1, out=out)

    def weight_grads(self, a, g, out=None):
        if not self.pointwise:
            return written_into(out, conv_weight_grad(self.module, a, g,
                                                      True))
        # [B, out, T] @ [B, T, in] -> [B, out, in (, 1, 1)]
        B, shape = g.shape[0], self.module.weight.shape
        G, A = g.reshape(B, shape[0], -1), a.reshape(B, shape[1], -1)
        if out is None:
            return torch.bmm(G, A.transpose(1, 2)).view(B, *shape)
        torch.bmm(G, A.transpose(1, 2), out=out.view(B, *shape[:2]))
        return out

    def kept_weight_sum(self, a, g, c):
        if self.transposed:
            return conv_weight_grad(self.module, a * c, g, False)
        return conv_weight_grad(self.module, a, g * c, False)


@register_layer_rule('conv_transpose')
class ConvTransposeCapture(ConvCapture):
    """``ConvTranspose2d``: the adjoint of the convolution with its
    weight."""

    transposed = True

    @classmethod
    def supports(cls, module):
        return True
