# DP-SGD on the paper's model (configs/_base_/tinyvit_simcc_mpii.py) with its
# partial fine-tuning: the last TinyViT stage, every norm layer and the head
# are trained (about 3.2 M of 5.8 M parameters); BatchNorm of the ConvBN
# layers frozen with the loaded statistics. Windowed attention folds windows
# into the batch dimension and the attention biases sit on the attention
# module, so the clipping engine 'auto' ends on 'vmap' (exact per sample).
_base_ = ['./_base_/tinyvit_simcc_mpii.py', './_base_/dp_sgd.py']
privacy = dict(
    target_epsilon=0.8, max_grad_norm=0.01, unit='instance',
    batch_norm=dict(mode='freeze'),
    trainable=dict(params=[r'^backbone\.stages\.3\.', r'^backbone\.norm3\.',
                           r'^head\.'], norm_layers=True))
