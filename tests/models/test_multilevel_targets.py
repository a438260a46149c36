"""vmap splits every per-sample field, lists included: MSPN and RSN read
multi-level heatmaps (a list of tensors per sample), which were once taken
from sample 0 for every sample of the micro-batch."""
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

from mmpose_dp.engine.mmengine_batch import MMEngineBatchLoss
from mmpose_dp.engine.model_preparation import prepare_private_model
from mmpose_dp.models import detect_loss_reduction
from mmpose_dp.privacy import (clip_factors, clipped_sum,
                               disable_inplace_activations, per_sample_norms)
from mmpose_dp.privacy.engines import VmapEngine, build_engine

from ..conftest import ROOT

CONFIGS = {name: osp.join(ROOT, 'configs', 'synthetic',
                          f'dp_tiny_{name}_synthetic.py')
           for name in ('mspn', 'rsn')}
BATCH = 4


def _model_and_batch(name, data_root):
    from mmpose.registry import DATASETS, MODELS
    init_default_scope('mmpose')
    cfg = Config.fromfile(CONFIGS[name])
    dataset_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
    dataset_cfg.data_root = data_root + '/'
    dataset_cfg.pipeline = [t for t in dataset_cfg.pipeline
                            if t['type'] != 'RandomFlip']
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    prepare_private_model(model, dict(batch_norm='group_norm'), cfg.model,
                          None, False, None)
    model.train()
    disable_inplace_activations(model)
    dataset = DATASETS.build(dataset_cfg)
    # Samples whose heatmaps differ: different people, so a split that
    # gave every sample sample 0's targets would be far off.
    batch = model.data_preprocessor(
        pseudo_collate([dataset[i] for i in range(BATCH)]), training=True)
    assert isinstance(batch['data_samples'][0].gt_fields.heatmaps, list)
    return model.double(), _to_double(batch)


def _to_double(batch):
    """Float64, lists included (in float32 a max-pooling tie on the flat
    generated backgrounds can break the other way in a batch of one)."""
    batch['inputs'] = batch['inputs'].double()
    for sample in batch['data_samples']:
        for field in ('gt_fields', 'gt_instance_labels'):
            element = sample.get(field)
            for key in list(element.keys()):
                value = element.get(key)
                element.set_field([v.double() for v in value]
                                  if isinstance(value, list) else
                                  value.double(), key)
    return batch


def _alone(model, batch, params):
    """Each sample's gradient from plain autograd on that sample alone."""
    rows = []
    for i in range(BATCH):
        one = dict(inputs=batch['inputs'][i:i + 1],
                   data_samples=batch['data_samples'][i:i + 1])
        loss = MMEngineBatchLoss().loss(model, one)
        rows.append(torch.autograd.grad(loss, params, allow_unused=True))
    return [torch.stack([torch.zeros_like(p) if r[k] is None else r[k]
                         for r in rows]) for k, p in enumerate(params)]


@pytest.mark.parametrize('name', list(CONFIGS))
def test_vmap_gives_each_sample_its_own_multilevel_targets(name,
                                                          synthetic_mpii):
    model, batch = _model_and_batch(name, synthetic_mpii)
    reduction = detect_loss_reduction(model)
    engine = VmapEngine(model, MMEngineBatchLoss(), reduction)
    rows, _ = engine.per_sample_gradients(batch)
    want = _alone(model, batch, engine.params)
    for i in range(BATCH):
        got_i = torch.cat([r[i].flatten() for r in rows])
        want_i = torch.cat([w[i].flatten() for w in want])
        assert float((got_i - want_i).norm() / want_i.norm()) < 1e-9, i
    # and so the clipped sum: each sample's contribution is its own
    c = 0.5 * float(per_sample_norms(want).min())
    expected = clipped_sum(want, clip_factors(per_sample_norms(want), c))
    summed, _ = build_engine('vmap', model, MMEngineBatchLoss(),
                             reduction).clipped_sum(batch,
                                                    list(range(BATCH)), c)
    diff = torch.cat([(a - b).flatten() for a, b in zip(summed, expected)])
    assert float(diff.norm()) < 1e-9 * BATCH * c
