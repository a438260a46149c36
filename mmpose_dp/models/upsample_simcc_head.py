"""The SimCC head of the paper: 1x1 conv to K, upsample, flatten, Linear."""
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from mmpose.models.heads import SimCCHead
from mmpose.registry import MODELS
from torch import Tensor


@MODELS.register_module()
class UpsampleSimCCHead(SimCCHead):
    """``SimCCHead`` whose K-channel map is upsampled (bilinear, no weights)
    before it is flattened, as in the paper's TinyViT-SimCC model: a 1x1
    conv from the backbone's channels to K, an upsampling of the 8x6 map to
    32x24 (768 values per keypoint), then Linear layers to the x and y bins.

    Args:
        in_featuremap_size: the backbone's feature map size (w, h).
        upsample: the upsampling factor (4: 8x6 -> 32x24).
        Other arguments as ``SimCCHead`` (no deconvolution layers).
    """

    def __init__(self, in_featuremap_size: Tuple[int, int],
                 upsample: int = 4, **kwargs):
        if kwargs.get('deconv_out_channels'):
            raise ValueError('UpsampleSimCCHead has no deconvolution layers')
        kwargs['deconv_out_channels'] = None
        self.upsample = upsample
        super().__init__(
            in_featuremap_size=tuple(s * upsample
                                     for s in in_featuremap_size),
            **kwargs)

    def forward(self, feats: Sequence[Tensor]) -> Tuple[Tensor, Tensor]:
        x = self.final_layer(feats[-1])
        x = F.interpolate(x, scale_factor=self.upsample, mode='bilinear',
                          align_corners=False)
        x = torch.flatten(x, 2)
        return self.mlp_head_x(x), self.mlp_head_y(x)
