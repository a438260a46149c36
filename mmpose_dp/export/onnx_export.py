"""The exported network as ONNX: an image crop in, heatmaps or SimCC
vectors out (what MMDeploy- and rtmlib-style runtimes run)."""
from typing import Dict, List, Optional

import torch
from torch import nn


class DeployForward(nn.Module):
    """``estimator._forward``: backbone, neck and head, no decoding."""

    def __init__(self, estimator: nn.Module):
        super().__init__()
        self.estimator = estimator

    def forward(self, inputs: torch.Tensor):
        return self.estimator._forward(inputs)


def outputs(model: nn.Module, inputs: torch.Tensor) -> List[torch.Tensor]:
    """The network's raw outputs as a list (one tensor, or SimCC's x, y)."""
    with torch.no_grad():
        out = model._forward(inputs)
    return list(out) if isinstance(out, (tuple, list)) else [out]


def export_onnx(model: nn.Module, example: torch.Tensor, path: str
                ) -> List[str]:
    """Write ``path``; returns the output names."""
    names = ['simcc_x', 'simcc_y'] if len(outputs(model, example)) == 2 \
        else ['heatmaps']
    torch.onnx.export(DeployForward(model).eval(), (example, ), path,
                      input_names=['input'], output_names=names,
                      dynamic_axes={'input': {0: 'batch'},
                                    **{n: {0: 'batch'} for n in names}},
                      opset_version=17, dynamo=False)
    return names


def onnx_difference(model: nn.Module, example: torch.Tensor,
                    path: str) -> Optional[Dict[str, float]]:
    """Max abs difference between ONNX Runtime (CPU) and torch on
    ``example`` per output, or None without onnxruntime."""
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(
        path, providers=['CPUExecutionProvider'])
    got = session.run(None, {'input': example.numpy()})
    want = outputs(model, example)
    names = [o.name for o in session.get_outputs()]
    return {n: float(abs(torch.from_numpy(g) - w).max())
            for n, g, w in zip(names, got, want)}
