"""Make a built MMPose model trainable with DP, before its optimizer exists.

``DPRunner.build_model`` calls :func:`prepare_private_model` right after the
model is built (before DDP wrapping, weight initialisation, checkpoint
loading and the optimizer), so parameter replacements orphan nothing:

1. BatchNorm (torch's, MMCV's SyncBN, and the BatchNorm hard-coded in MMPose
   heads) becomes :class:`FrozenBatchNorm` (``'freeze'``: the statistics
   of the loaded public weights, fixed) or GroupNorm (``'group_norm'``:
   training from scratch). ``'auto'`` picks ``'freeze'`` when the run
   loads pretrained weights (``load_from``, or an ``init_cfg`` of type
   ``Pretrained``) and ``'group_norm'`` otherwise; a resumed or evaluated DP
   checkpoint keeps the mode it was trained with.
2. ``privacy.trainable`` freezes every parameter it does not name.
3. Stock modules whose forward cannot run under per-sample hooks as written
   get a forward with the same values (:mod:`mmpose_dp.models.compat`).
"""
import os.path as osp
from typing import Dict, List, Optional

from mmengine.logging import print_log
from mmengine.runner import find_latest_checkpoint
from torch import nn

from .checkpoint_loading import load_checkpoint_file
from .checkpoint_privacy import privacy_state
from ..models import (convert_batch_norm, is_batch_norm,
                      patch_for_per_sample_gradients, select_trainable)
from ..models.single_value_norms import single_value_batch_norms
from ..privacy.plan import PrivacyPlan

BATCH_NORM_DEFAULTS = dict(mode='auto', num_groups=32, trainable_affine=True)


def batch_norm_settings(privacy: Dict) -> Dict:
    """``privacy.batch_norm`` (a mode string or a dict) with defaults."""
    given = privacy.get('batch_norm') or {}
    if isinstance(given, str):
        given = dict(mode=given)
    unknown = set(given) - set(BATCH_NORM_DEFAULTS)
    if unknown:
        raise ValueError(f'unknown privacy.batch_norm keys {sorted(unknown)}; '
                         f'known: {sorted(BATCH_NORM_DEFAULTS)}')
    settings = dict(BATCH_NORM_DEFAULTS, **given)
    if settings['mode'] not in ('auto', 'freeze', 'group_norm'):
        raise ValueError("privacy.batch_norm.mode must be 'auto', 'freeze' or "
                         f"'group_norm', got {settings['mode']!r}")
    return settings


def _has_pretrained_init(cfg) -> bool:
    if isinstance(cfg, dict):
        init = cfg.get('init_cfg')
        inits = init if isinstance(init, (list, tuple)) else [init]
        if any(isinstance(i, dict) and i.get('type') == 'Pretrained'
               for i in inits):
            return True
        return any(_has_pretrained_init(v) for v in cfg.values())
    if isinstance(cfg, (list, tuple)):
        return any(_has_pretrained_init(v) for v in cfg)
    return False


def pretrained_checkpoints(cfg) -> List[str]:
    """The ``checkpoint`` of every ``init_cfg`` of type ``Pretrained`` in a
    model config."""
    found = []
    if isinstance(cfg, dict):
        init = cfg.get('init_cfg')
        for i in init if isinstance(init, (list, tuple)) else [init]:
            if isinstance(i, dict) and i.get('type') == 'Pretrained' and \
                    i.get('checkpoint'):
                found.append(str(i['checkpoint']))
        for value in cfg.values():
            found += pretrained_checkpoints(value)
    elif isinstance(cfg, (list, tuple)):
        for value in cfg:
            found += pretrained_checkpoints(value)
    return found


def checkpoint_plan(path: Optional[str]) -> Optional[PrivacyPlan]:
    """The privacy plan stored in a local checkpoint, if any."""
    if not path or not osp.isfile(path):
        return None
    plan = privacy_state(load_checkpoint_file(path, map_location='cpu'))[1]
    return None if plan is None else PrivacyPlan.from_dict(plan)


def resolve_batch_norm_mode(settings: Dict, model_cfg, load_from: Optional[str],
                            resume: bool, work_dir: Optional[str]
                            ) -> (str, str):
    """(mode, why) for ``'auto'``; an explicit mode is kept."""
    path = load_from
    if resume and not path and work_dir:
        path = find_latest_checkpoint(work_dir)
    plan = checkpoint_plan(path)
    trained = plan.batch_norm_mode if plan else None
    if settings['mode'] != 'auto':
        return settings['mode'], 'privacy.batch_norm says so'
    if trained:
        return trained, f'the mode {osp.basename(path)} was trained with'
    if load_from:
        return 'freeze', f'pretrained weights (load_from {load_from})'
    if _has_pretrained_init(model_cfg):
        return 'freeze', 'pretrained weights (an init_cfg of type Pretrained)'
    return 'group_norm', 'no pretrained weights (training from scratch)'


def model_input_size(model_cfg) -> Optional[List[int]]:
    """The model's input ``(w, h)``, from its head's codec."""
    decoder = ((model_cfg or {}).get('head') or {}).get('decoder') or {}
    return decoder.get('input_size') if isinstance(decoder, dict) else None


def prepare_private_model(model: nn.Module, privacy: Dict, model_cfg,
                          load_from: Optional[str], resume: bool,
                          work_dir: Optional[str]) -> Dict:
    """Convert BatchNorm and select the trainable parameters, in place;
    returns what was done (for the log and the privacy plan)."""
    settings = batch_norm_settings(privacy)
    summary = dict(batch_norm=dict(mode=None, layers=0, why=''))
    if any(is_batch_norm(m) for m in model.modules()):
        mode, why = resolve_batch_norm_mode(settings, model_cfg, load_from,
                                            resume, work_dir)
        affine_only = (single_value_batch_norms(
            model, model_input_size(model_cfg)) if mode == 'group_norm'
            else [])
        report = convert_batch_norm(model, mode, settings['num_groups'],
                                    settings['trainable_affine'], affine_only)
        summary['batch_norm'] = dict(
            mode=mode, layers=report['count'], why=why,
            affine_only=len(report['affine_only']),
            trainable_affine=settings['trainable_affine'])
        done = ('frozen (statistics of the loaded weights, never updated)'
                if mode == 'freeze' else 'replaced by GroupNorm (re-initialised'
                f", up to {settings['num_groups']} groups)")
        print_log(
            f"[privacy] BatchNorm: "
            f"{report['count'] - len(report['affine_only'])} layers {done}, "
            'because '
            f"of {why}; affine parameters "
            f"{'trainable' if settings['trainable_affine'] else 'frozen'}"
            + (f"; fewer groups where channels do not divide: "
               f"{len(report['regrouped'])} layers"
               if report['regrouped'] else '')
            + (f"; {len(report['affine_only'])} layers on 1x1 pooled maps "
               'kept as fixed-statistics affine maps (GroupNorm would make '
               f"them constant): {report['affine_only'][:3]}"
               + (' ...' if len(report['affine_only']) > 3 else '')
               if report['affine_only'] else ''), logger='current')
    patched = patch_for_per_sample_gradients(model)
    if patched:
        summary['patched'] = patched
        print_log(
            f'[privacy] {len(patched)} modules run a hook-safe forward with '
            f'the same values (mmpose_dp.models.compat): {patched[:4]}'
            + (' ...' if len(patched) > 4 else ''), logger='current')
    if privacy.get('trainable') is not None:
        counts = select_trainable(model, privacy['trainable'])
        summary['trainable'] = counts
        print_log(
            f"[privacy] privacy.trainable: {counts['trainable']} parameters "
            f"in {counts['trainable_tensors']} tensors trainable (the noise "
            f"dimension), {counts['frozen']} frozen", logger='current')
    return summary
