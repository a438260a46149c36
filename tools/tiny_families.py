"""Tiny models of every family of MMPose's stock MPII top-down configs, of
the families only its COCO zoo has (Swin, HRFormer, PVT, PVTv2, VGG,
AlexNet, ResNeSt, ViPNAS, the visibility head; ViTPose-small) and of the paper's TinyViT-SimCC,
built from the stock config's model dict with channels and depth shrunk and
the codec scaled to a small input, the stock normalisation layers kept.
Every head predicts MPII's 16 joints (the tests and the sweep use MPII data).

Used by the per-family exactness tests (tests/models/test_model_families.py)
and by the neighbouring-dataset sweep (tools/sensitivity_sweep.py).
"""
import copy
import os.path as osp
from typing import Callable, Dict, NamedTuple, Optional, Tuple

from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
MPII_JOINTS = 16


def stock_config_dir() -> str:
    import mmpose
    return osp.join(osp.dirname(mmpose.__file__), '.mim', 'configs',
                    'body_2d_keypoint')


def _heatmap_head(model, in_channels: int) -> None:
    """The stock HeatmapHead with its three deconvolutions kept, narrower."""
    model.head.update(in_channels=in_channels, deconv_out_channels=(8, 8, 8),
                      deconv_kernel_sizes=(4, 4, 4))


def _resnet_heatmap(**backbone):
    """ResNet-style backbones: Bottleneck blocks (depth 50), 4 base
    channels, so the last stage has 128."""
    base = backbone.pop('base_channels', 4)

    def shrink(model):
        model.backbone.update(depth=50, stem_channels=8, base_channels=base,
                              **backbone)
        _heatmap_head(model, base * 32)
    return shrink


def _vis_resnet(model):
    """VisPredictHead (a visibility classifier beside the pose head)."""
    model.backbone.update(depth=50, stem_channels=8, base_channels=4)
    model.head.pose_cfg.update(in_channels=128, deconv_out_channels=(8, 8, 8),
                               deconv_kernel_sizes=(4, 4, 4))


def _hrnet(model):
    extra = model.backbone.extra
    for stage, channels in (('stage1', (8, )), ('stage2', (8, 16)),
                            ('stage3', (8, 16, 32)),
                            ('stage4', (8, 16, 32, 64))):
        extra[stage].update(num_modules=1, num_channels=channels,
                            num_blocks=(1, ) * len(channels))
    model.head.in_channels = 8


def _litehrnet(model):
    extra = model.backbone.extra
    extra.stem.update(stem_channels=16, out_channels=16)
    extra.stages_spec.update(
        num_modules=(1, 1, 1), num_blocks=(1, 1, 1), reduce_ratios=(2, 2, 2),
        num_channels=((16, 32), (16, 32, 64), (16, 32, 64, 128)))
    model.head.in_channels = 16


def _mobilenetv2(model):
    model.backbone.widen_factor = 0.25  # the last conv keeps 1280 channels
    _heatmap_head(model, 1280)


def _shufflenetv1(model):
    model.backbone.widen_factor = 0.5
    _heatmap_head(model, 480)


def _shufflenetv2(model):
    model.backbone.widen_factor = 0.5
    _heatmap_head(model, 1024)


def _hourglass(model):
    # The stem's 128/256 channels are hard-coded: stage_channels[0] = 256.
    model.backbone.update(downsample_times=2, stage_channels=(256, 16, 16),
                          stage_blocks=(1, 1, 1), feat_channel=16)
    model.head.in_channels = 16


def _cpm(model):
    # Two stages keep it multi-stage; the stem's channels are hard-coded.
    model.backbone.update(feat_channels=16, middle_channels=8, num_stages=2)
    model.head.num_stages = 2


def _cspnext(model):
    # norm_cfg stays the stock SyncBN: without a process group it runs as
    # BatchNorm, and convert_batch_norm replaces it as a DP run does.
    model.backbone.update(deepen_factor=0.33, widen_factor=0.125)  # 128 out


def _cspnext_udp(model):
    _cspnext(model)
    _heatmap_head(model, 128)


def _rtmpose(model):
    _cspnext(model)
    model.head.update(in_channels=128)
    model.head.gau_cfg.update(hidden_dims=16, s=8)


def _tiny_resnet(model):
    model.backbone.update(depth=50, stem_channels=8, base_channels=4)
    model.head.in_channels = 128


def _simcc_deconv(model):
    # SimCC with its deconvolution head (a HeatmapHead used as layers).
    _tiny_resnet(model)
    model.head.update(deconv_out_channels=(8, 8, 8))


def _vitpose(model):
    # ViTPose-small shrunk; pos_embed is held by the backbone module itself.
    model.backbone.update(
        arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                  feedforward_channels=64), img_size=(64, 48),
        drop_path_rate=0.0)
    model.head.update(in_channels=32, deconv_out_channels=(8, 8))


def _tinyvit(model):
    # The paper's TinyViT-SimCC shrunk: windowed attention, attention biases
    # on the attention module, ConvBN layers.
    model.backbone.update(
        arch=dict(channels=[16, 32, 40, 80], num_heads=[2, 4, 5, 10],
                  depths=[1, 1, 1, 1]), img_size=(64, 64))
    model.head.in_channels = 80


# -- families only in the COCO zoo (tried on MPII data: 16-joint heads) --

def _swin(model):
    # Shifted windows need two blocks a stage; the relative position bias
    # table and its index buffer sit on the attention module.
    model.backbone.update(embed_dims=16, depths=(2, 2, 2, 2),
                          num_heads=(1, 2, 2, 4), drop_path_rate=0.0)
    _heatmap_head(model, 128)


def _hrformer(model):
    extra = model.backbone.extra
    extra.drop_path_rate = 0.0
    extra.stage1.update(num_blocks=(1, ), num_channels=(8, ))
    for stage, channels in (('stage2', (8, 16)), ('stage3', (8, 16, 32)),
                            ('stage4', (8, 16, 32, 64))):
        extra[stage].update(num_modules=1, num_channels=channels,
                            num_blocks=(1, ) * len(channels))
    model.head.in_channels = 8


def _pvt(model):
    # Stage widths are embed_dims x the stock heads (1, 2, 5, 8).
    model.backbone.update(embed_dims=16, num_layers=[1, 1, 1, 1],
                          pretrain_img_size=64, drop_path_rate=0.0)
    _heatmap_head(model, 128)


def _vgg(model):
    # VGG's widths are fixed (64...512): three stages of VGG-11, stride 8,
    # so one deconvolution reaches the heatmap's stride 4.
    model.backbone.update(depth=11, num_stages=3, dilations=(1, 1, 1),
                          out_indices=(2, ))
    model.head.update(in_channels=256, deconv_out_channels=(8, ),
                      deconv_kernel_sizes=(4, ))


def _alexnet(model):
    # AlexNet's widths and strides are fixed; 11x11 stride-4 stem.
    _heatmap_head(model, 256)


def _vipnas_resnet(model):
    model.backbone.update(wid=[8, 16, 16, 32, 64], dep=[None, 1, 1, 1, 1],
                          group=[None, 4, 4, 4, 4])
    model.head.update(in_channels=64, deconv_out_channels=(16, 16, 16),
                      deconv_num_groups=(4, 4, 4))


def _vipnas_mbv3(model):
    # groups divide each block's expanded width (wid x expan).
    model.backbone.update(wid=[8, 8, 8, 16, 16, 16, 32],
                          dep=[None, 1, 1, 1, 1, 1, 1],
                          group=[None, 4, 40, 16, 20, 40, 48])
    model.head.update(in_channels=32, deconv_out_channels=(16, 16, 16),
                      deconv_num_groups=(16, 16, 16))


class Family(NamedTuple):
    """A stock config and how to shrink its model dict in place."""
    config: str  #: under mmpose's configs/body_2d_keypoint/
    shrink: Callable
    input_size: Tuple[int, int] = (64, 64)
    #: Trainable parameters outside the forward (no gradient, no row).
    unused_prefix: Optional[str] = None
    #: The codec's heatmap size where the head's output is not input / 4.
    heatmap_size: Optional[Tuple[int, int]] = None


_COCO = 'topdown_heatmap/coco/'
FAMILIES: Dict[str, Family] = {
    'resnet': Family('topdown_heatmap/mpii/td-hm_res50_8xb64-210e_mpii-'
                     '256x256.py', _resnet_heatmap()),
    'resnetv1d': Family('topdown_heatmap/mpii/td-hm_resnetv1d50_8xb64-210e_'
                        'mpii-256x256.py', _resnet_heatmap()),
    'resnext': Family('topdown_heatmap/mpii/td-hm_resnext152_8xb32-210e_'
                      'mpii-256x256.py',
                      _resnet_heatmap(groups=2, width_per_group=4)),
    'seresnet': Family('topdown_heatmap/mpii/td-hm_seresnet50_8xb64-210e_'
                       'mpii-256x256.py', _resnet_heatmap(se_ratio=4)),
    # SCNet's self-calibration pools the last stage by 4: at 128x128 that
    # leaves 1x1 maps, where GroupNorm's one-channel groups hold a single
    # value (torch refuses it for a batch of one); its stock 256x256 gives 2x2.
    'scnet': Family('topdown_heatmap/mpii/td-hm_scnet50_8xb64-210e_mpii-'
                    '256x256.py', _resnet_heatmap(base_channels=8),
                    (256, 256)),
    'hrnet': Family('topdown_heatmap/mpii/td-hm_hrnet-w32_8xb64-210e_mpii-'
                    '256x256.py', _hrnet),
    'litehrnet': Family('topdown_heatmap/mpii/td-hm_litehrnet-18_8xb64-210e_'
                        'mpii-256x256.py', _litehrnet),
    'mobilenetv2': Family('topdown_heatmap/mpii/td-hm_mobilenetv2_8xb64-'
                          '210e_mpii-256x256.py', _mobilenetv2),
    'shufflenetv1': Family('topdown_heatmap/mpii/td-hm_shufflenetv1_8xb64-'
                           '210e_mpii-256x256.py', _shufflenetv1),
    'shufflenetv2': Family('topdown_heatmap/mpii/td-hm_shufflenetv2_8xb64-'
                           '210e_mpii-256x256.py', _shufflenetv2),
    # With one stack, the inter-stack layers are built but never called.
    'hourglass': Family('topdown_heatmap/mpii/td-hm_hourglass52_8xb64-210e_'
                        'mpii-256x256.py', _hourglass,
                        unused_prefix='backbone.inters.'),
    'cpm': Family('topdown_heatmap/mpii/td-hm_cpm_8xb64-210e_mpii-368x368.py',
                  _cpm),
    'cspnext_udp': Family('topdown_heatmap/mpii/cspnext-m_udp_8xb64-210e_'
                          'mpii-256x256.py', _cspnext_udp),
    'rtmpose': Family('rtmpose/mpii/rtmpose-m_8xb64-210e_mpii-256x256.py',
                      _rtmpose),
    'simcc': Family('simcc/mpii/simcc_res50_wo-deconv-8xb64-210e_mpii-'
                    '256x256.py', _tiny_resnet),
    'regression': Family('topdown_regression/mpii/td-reg_res50_8xb64-210e_'
                         'mpii-256x256.py', _tiny_resnet),
    'rle': Family('topdown_regression/mpii/td-reg_res50_rle-8xb64-210e_'
                  'mpii-256x256.py', _tiny_resnet),
    # A COCO-trained, BatchNorm-free zoo model (MMPretrain's ViT), with an
    # MPII head; its HeatmapHead deconvolutions hard-code BatchNorm.
    'vitpose': Family('topdown_heatmap/coco/td-hm_ViTPose-small_8xb64-210e_'
                      'coco-256x192.py', _vitpose, (48, 64)),
    # The paper's model (this project's config).
    'tinyvit': Family(osp.join(ROOT, 'configs', '_base_',
                               'tinyvit_simcc_mpii.py'), _tinyvit),
    # Families only in the COCO zoo.
    'swin': Family(_COCO + 'td-hm_swin-t-p4-w7_8xb32-210e_coco-256x192.py',
                   _swin),
    'hrformer': Family(_COCO + 'td-hm_hrformer-small_8xb32-210e_coco-'
                       '256x192.py', _hrformer),
    'pvt': Family(_COCO + 'td-hm_pvt-s_8xb64-210e_coco-256x192.py', _pvt),
    'pvtv2': Family(_COCO + 'td-hm_pvtv2-b2_8xb64-210e_coco-256x192.py',
                    _pvt),
    'simcc_deconv': Family('simcc/coco/simcc_res50_8xb64-210e_coco-'
                           '256x192.py', _simcc_deconv),
    'vgg': Family(_COCO + 'td-hm_vgg16-bn_8xb64-210e_coco-256x192.py', _vgg),
    # AlexNet's head is not at stride 4 (the stock codec has 40x56 heatmaps
    # at 192x256): scaling the codec does not fit it, so the tiny family's
    # codec takes the head's 24x24 at 128x128.
    'alexnet': Family(_COCO + 'td-hm_alexnet_8xb64-210e_coco-256x192.py',
                      _alexnet, (128, 128), heatmap_size=(24, 24)),
    'resnest': Family(_COCO + 'td-hm_resnest50_8xb64-210e_coco-256x192.py',
                      _resnet_heatmap()),
    'vipnas_resnet': Family(_COCO + 'td-hm_vipnas-res50_8xb64-210e_coco-'
                            '256x192.py', _vipnas_resnet),
    # UDP's combined target: a heatmap and two offset maps per joint.
    'udp_combined': Family(_COCO + 'td-hm_hrnet-w32_udp-regress-8xb64-210e_'
                           'coco-256x192.py', _hrnet),
    # A visibility head (BCELoss) beside the heatmap head.
    'vis_head': Family(_COCO + 'td-hm-vis_res50_8xb64-210e_coco-aic-256x192-'
                       'merge.py', _vis_resnet),
    'vipnas_mbv3': Family(_COCO + 'td-hm_vipnas-mbv3_8xb64-210e_coco-'
                          '256x192.py', _vipnas_mbv3),
}


def scaled_codec(stock: Dict, input_size: Tuple[int, int]) -> Dict:
    """The stock codec at ``input_size``, heatmap and SimCC sigma scaled."""
    codec = copy.deepcopy(dict(stock))
    ratios = [new / old for new, old in zip(input_size, stock['input_size'])]
    codec['input_size'] = input_size
    if 'heatmap_size' in codec:  # per axis: (192, 256) -> (64, 64) too
        codec['heatmap_size'] = tuple(
            round(s * r) for s, r in zip(codec['heatmap_size'], ratios))
    if codec['type'] == 'SimCCLabel':
        sigma = codec['sigma']
        codec['sigma'] = (tuple(s * r for s, r in zip(sigma, ratios))
                          if isinstance(sigma, (tuple, list))
                          else sigma * ratios[0])
    return codec


def tiny_model_config(family: str):
    """The shrunk model dict of ``family`` and its codec."""
    spec = FAMILIES[family]
    cfg = Config.fromfile(osp.join(stock_config_dir(), spec.config))
    model = copy.deepcopy(cfg.model)
    model.backbone.init_cfg = None  # no download; statistics set below
    spec.shrink(model)
    # VisPredictHead wraps the pose head (its pose_cfg).
    head = model.head.get('pose_cfg', model.head)
    codec = scaled_codec(cfg.codec, spec.input_size)
    if 'out_channels' in head:  # COCO heads have 17
        # UDP's combined target has a heatmap and two offsets per joint.
        per_joint = 3 if codec.get('heatmap_type') == 'combined' else 1
        head.out_channels = per_joint * MPII_JOINTS
    if spec.heatmap_size:
        codec['heatmap_size'] = spec.heatmap_size
    head.decoder = codec
    size = spec.input_size
    if 'input_size' in model.head:
        model.head.input_size = size
        model.head.in_featuremap_size = (size[0] // 32, size[1] // 32)
    return model, codec
