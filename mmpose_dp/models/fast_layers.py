"""Layer types of MMCV whose forward is torch's, declared to the ``fast``
engine (which otherwise matches layers by exact type).

MMCV's ``wrappers`` subclass ``nn.Conv2d``, ``nn.ConvTranspose2d`` and
``nn.Linear`` only to handle empty inputs on torch < 1.4/1.5; on the
torch this project runs their forward is the parent's (``super().forward``).
MMPose heads build their deconvolutions with them. Each engine still checks
the model against per-sample autograd before its first private step.
"""
from mmcv.cnn.bricks import wrappers

from ..privacy.engines.fast import register_fast_layer

register_fast_layer(wrappers.Conv2d, 'conv')
register_fast_layer(wrappers.ConvTranspose2d, 'conv_transpose')
register_fast_layer(wrappers.Linear, 'linear')
