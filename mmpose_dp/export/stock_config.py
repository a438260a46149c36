"""The training config of a private run as a stock MMPose config.

What goes: the ``privacy`` section, ``runner_type``, the ``mmpose_dp``
import, the DP components (``DPOptimWrapper``, ``PoissonBatchSampler`` and
its collate, ``DPEpochBasedTrainLoop``, the privacy hooks,
``DPLogProcessor``), ``load_from`` and ``resume``.
mmpose_dp's MPII metric becomes MMPose's (the same PCKh values). What the
network needs stays, with its normalisation as trained:

* BatchNorm frozen (``'freeze'``): the stock config as it is, since a
  frozen BatchNorm is an eval-mode BatchNorm with the same statistics;
* BatchNorm replaced by GroupNorm (``'group_norm'``): every BatchNorm
  ``norm_cfg`` of the model becomes ``GN`` (pure stock where that rebuilds
  the trained network: every layer reached by a ``norm_cfg`` and split into
  the same groups), else the model type
  ``GroupNormTopdownPoseEstimator`` (an ``mmpose_dp`` model module) does
  the run's own conversion.
"""
import copy
import inspect
from typing import Dict, List, Optional, Set

from mmengine.config import Config, ConfigDict

from ..engine.privacy_session import PRIVACY_HOOKS
from ..privacy.plan import PrivacyPlan

#: MMCV/MMPose norm types that a private run turns into GroupNorm.
BATCH_NORM_TYPES = {'BN', 'BN1d', 'BN2d', 'BN3d', 'SyncBN', 'MMSyncBN'}
#: Model types that exist only in mmpose_dp (model modules, no privacy).
PROJECT_MODEL_TYPES = {'GNHeatmapHead', 'GNSimCCHead', 'UpsampleSimCCHead',
                       'GroupNormTopdownPoseEstimator'}
DP_HOOKS = set(PRIVACY_HOOKS)
DP_LOOP_KEYS = ('max_physical_batch_size', 'log_private_metrics',
                'physical_batch_size', 'cuda_graphs')
DP_OPTIM_KEYS = ('max_grad_norm', 'noise_seed', 'engine')


def model_types(cfg) -> Set[str]:
    """Every ``type`` named inside a (model) config."""
    found = set()
    if isinstance(cfg, dict):
        if isinstance(cfg.get('type'), str):
            found.add(cfg['type'])
        for value in cfg.values():
            found |= model_types(value)
    elif isinstance(cfg, (list, tuple)):
        for value in cfg:
            found |= model_types(value)
    return found


def project_modules(model_cfg) -> List[str]:
    """The mmpose_dp model modules a model config needs."""
    return sorted(model_types(model_cfg) & PROJECT_MODEL_TYPES)


def _default_norm_cfg(type_name) -> Optional[Dict]:
    """The ``norm_cfg`` default of a registered module's constructor."""
    from mmpose.registry import MODELS
    cls = MODELS.get(type_name) if isinstance(type_name, str) else None
    if cls is None or not inspect.isclass(cls):
        return None
    param = inspect.signature(cls.__init__).parameters.get('norm_cfg')
    default = None if param is None else param.default
    return default if isinstance(default, dict) else None


def with_group_norm(cfg, num_groups: int):
    """A copy of a model config whose BatchNorm ``norm_cfg`` are GroupNorm,
    explicit ones and constructor defaults (HRNet's is BatchNorm)."""
    cfg = copy.deepcopy(cfg)

    def visit(node):
        if isinstance(node, dict):
            norm = node.get('norm_cfg', _default_norm_cfg(node.get('type')))
            if isinstance(norm, dict) and norm.get('type') in \
                    BATCH_NORM_TYPES:
                node['norm_cfg'] = ConfigDict(type='GN',
                                              num_groups=num_groups)
            for value in node.values():
                visit(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                visit(value)

    visit(cfg)
    return cfg


def _stock_evaluators(cfg: Config) -> None:
    """mmpose_dp's MpiiPCKhAccuracy is MMPose's MpiiPCKAccuracy (head
    normalised) plus per-group values at 0.1: the stock metric gives the
    same PCKh@0.5, per group, and PCKh@0.1."""
    for key in ('val_evaluator', 'test_evaluator'):
        evaluators = cfg.get(key)
        if evaluators is None:
            continue
        items = evaluators if isinstance(evaluators, list) else [evaluators]
        for item in items:
            if item.get('type') == 'MpiiPCKhAccuracy':
                item['type'] = 'MpiiPCKAccuracy'
                item.setdefault('norm_item', 'head')


def _strip_privacy(cfg: Config) -> None:
    for key in ('privacy', 'runner_type', 'load_from'):
        cfg.pop(key, None)
    cfg.resume = False
    imports = cfg.get('custom_imports')
    if imports is not None:
        kept = [i for i in imports.get('imports', [])
                if i != 'mmpose_dp' and not i.startswith('mmpose_dp.')]
        if kept:
            imports['imports'] = kept
        else:
            cfg.pop('custom_imports')
    hooks = [h for h in cfg.get('custom_hooks') or []
             if h.get('type') not in DP_HOOKS]
    cfg.custom_hooks = hooks
    ow = cfg.get('optim_wrapper')
    if ow is not None:
        ow['type'] = 'OptimWrapper'
        for key in DP_OPTIM_KEYS:
            ow.pop(key, None)
    loader = cfg.get('train_dataloader')
    if loader is not None:
        loader.pop('batch_sampler', None)
        loader['sampler'] = dict(type='DefaultSampler', shuffle=True)
        loader['collate_fn'] = dict(type='pseudo_collate')
    train_cfg = cfg.get('train_cfg')
    if train_cfg is not None:
        train_cfg['type'] = 'EpochBasedTrainLoop'
        for key in DP_LOOP_KEYS:
            train_cfg.pop(key, None)
    log_processor = cfg.get('log_processor')
    if log_processor is not None and log_processor.get('type') == \
            'DPLogProcessor':
        log_processor['type'] = 'LogProcessor'


def exported_config(cfg: Config, plan: PrivacyPlan, num_groups: int,
                    stock_group_norm: bool = True) -> Config:
    """``cfg`` without its privacy machinery, the model as trained (see the
    module docstring); ``stock_group_norm=False`` takes the
    ``GroupNormTopdownPoseEstimator`` route for a GroupNorm run."""
    out = copy.deepcopy(cfg)
    _strip_privacy(out)
    _stock_evaluators(out)
    mode = plan.batch_norm_mode
    if mode == 'group_norm':
        if stock_group_norm:
            out.model = with_group_norm(out.model, num_groups)
        else:
            out.model['type'] = 'GroupNormTopdownPoseEstimator'
            out.model['num_groups'] = num_groups
    needed = project_modules(out.model)
    if needed:
        out.custom_imports = dict(imports=['mmpose_dp.models'],
                                  allow_failed_imports=False)
    return out
