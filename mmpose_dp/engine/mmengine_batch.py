"""How an MMEngine/MMPose model's training batch becomes a loss, for the
clipping engines (:class:`mmpose_dp.privacy.engines.BatchLoss`)."""
import contextlib
import sys
from typing import Dict, List, Tuple

import numpy as np
import torch
from mmengine.model import is_model_wrapper

from ..privacy.engines import BatchLoss

#: Data fields of a PoseDataSample whose tensors the loss reads.
LABEL_FIELDS = ('gt_fields', 'gt_instance_labels')


def _shapes_only(x, unzip=False):
    if isinstance(x, (list, tuple)):
        return type(x)(_shapes_only(v) for v in x)
    return np.zeros(tuple(x.shape), dtype=np.float32)


@contextlib.contextmanager
def accuracy_without_data():
    """MMPose heads compute a training accuracy with numpy
    (``to_numpy(pred)``) inside ``loss()``; under ``torch.func.vmap`` a tensor
    has no data to give. Inside the block those helpers see zeros of the
    right shape: the accuracy of private batches is not used by DP training
    (its loss is what matters), and it would be an un-noised statistic."""
    modules = [m for name, m in list(sys.modules.items())
               if name.startswith('mmpose.models') and m is not None
               and getattr(m, 'to_numpy', None) is not None]
    saved = [m.to_numpy for m in modules]
    for m in modules:
        m.to_numpy = _shapes_only
    try:
        yield
    finally:
        for m, f in zip(modules, saved):
            m.to_numpy = f


class MMEngineBatchLoss(BatchLoss):
    """``data_preprocessor`` -> ``forward(mode='loss')`` -> ``parse_losses``,
    as ``BaseModel.train_step`` does, for a collated
    ``dict(inputs=[...], data_samples=[...])``."""

    @staticmethod
    def _module(model):
        return model.module if is_model_wrapper(model) else model

    def prepare(self, model, batch):
        return self._module(model).data_preprocessor(batch, training=True)

    def loss(self, model, batch):
        losses = model(**batch, mode='loss')
        loss, _ = model.parse_losses(losses)
        return loss

    def num_samples(self, batch):
        return len(batch['inputs'])

    def split(self, batch) -> Tuple[List[torch.Tensor], object]:
        samples = batch['data_samples']
        keys: List[Tuple[str, str]] = []
        for field in LABEL_FIELDS:
            if field in samples[0]:
                keys += [(field, k) for k, v in samples[0].get(field).items()
                         if torch.is_tensor(v)]
        tensors = [batch['inputs']] + [
            torch.stack([s.get(f).get(k) for s in samples]) for f, k in keys]
        template = samples[0]

        def rebuild(slices) -> Dict:
            sample = template.clone()
            fields: Dict[str, Dict] = {}
            for (field, key), value in zip(keys, slices[1:]):
                fields.setdefault(field, {})[key] = value
            for field, values in fields.items():
                data = sample.get(field).new()
                data.set_data(values)
                sample.set_field(data, field)
            return dict(inputs=slices[0].unsqueeze(0), data_samples=[sample])

        return tensors, rebuild

    def per_sample_context(self):
        return accuracy_without_data()
