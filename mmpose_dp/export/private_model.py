"""The private model as its run trained it, rebuilt from config and
checkpoint: the config's model, its BatchNorm converted as the checkpoint's
privacy plan says, the trained weights loaded strictly."""
import copy
from typing import Dict, Optional, Tuple

from mmengine.config import Config
from mmengine.registry import init_default_scope
from torch import nn

from ..engine.checkpoint_loading import load_checkpoint_file
from ..engine.checkpoint_privacy import privacy_state, search_card
from ..engine.model_preparation import batch_norm_settings, model_input_size
from ..models import convert_batch_norm, is_batch_norm
from ..models.single_value_norms import single_value_batch_norms
from ..privacy import NotPrivateError
from ..privacy.plan import PrivacyPlan


def read_private_checkpoint(
        path: str) -> Tuple[Dict, Dict, PrivacyPlan, Optional[Dict]]:
    """``(state_dict, ledger state, plan, search card)`` of a DP checkpoint
    (the card only for the best of a private search); refuses one without
    a privacy ledger and plan."""
    checkpoint = load_checkpoint_file(path, 'cpu')
    ledger, plan = privacy_state(checkpoint)
    if ledger is None:
        raise NotPrivateError(
            f'{path} holds no privacy ledger: it was not written by a DP '
            'run (or its privacy record was stripped), so there is no '
            'guarantee to export with it')
    return (checkpoint.get('state_dict', checkpoint), ledger,
            PrivacyPlan.from_dict(plan or {}), search_card(checkpoint))


def build_private_model(cfg: Config, plan: PrivacyPlan) -> nn.Module:
    """The network the run trained: ``cfg.model`` built, BatchNorm frozen
    or replaced by GroupNorm as recorded in ``plan``."""
    from mmpose.registry import MODELS
    init_default_scope(cfg.get('default_scope', 'mmpose'))
    model_cfg = copy.deepcopy(cfg.model)
    if 'backbone' in model_cfg:
        model_cfg.backbone.init_cfg = None  # the weights come from the run
    model = MODELS.build(model_cfg)
    mode = plan.batch_norm_mode
    if mode and any(is_batch_norm(m) for m in model.modules()):
        settings = batch_norm_settings(dict(cfg.get('privacy') or {}))
        affine_only = (single_value_batch_norms(
            model, model_input_size(model_cfg)) if mode == 'group_norm'
            else [])  # as DPRunner converted them
        convert_batch_norm(model, mode, settings['num_groups'],
                           affine_only=affine_only)
    return model


def load_private_model(cfg: Config, checkpoint: str) -> nn.Module:
    """:func:`build_private_model` with the checkpoint's weights (strict),
    in eval mode, with ``cfg`` and the data set's metainfo attached as
    MMPose's ``init_model`` does."""
    from mmpose.apis.inference import dataset_meta_from_config
    state_dict, _, plan, _ = read_private_checkpoint(checkpoint)
    model = build_private_model(cfg, plan)
    model.load_state_dict(state_dict, strict=True)
    model.cfg = cfg
    for mode in ('train', 'val', 'test'):  # a ConcatDataset has none
        model.dataset_meta = dataset_meta_from_config(cfg, dataset_mode=mode)
        if model.dataset_meta is not None:
            break
    return model.eval()
