"""How an MMEngine/MMPose model's training batch becomes a loss, for the
clipping engines (:class:`mmpose_dp.privacy.engines.BatchLoss`)."""
import contextlib
import sys
from typing import Dict, List, Tuple

import numpy as np
import torch
from mmengine.model import is_model_wrapper
from mmengine.structures import BaseDataElement

from ..privacy.engines import BatchLoss

#: A leaf of a data sample: (data field, key) or (data field, key, list
#: index); e.g. ('gt_fields', 'heatmaps') or ('gt_fields', 'heatmaps', 2)
#: for the third level of MSPN's multi-level heatmaps.
Path = Tuple


def data_paths(sample: BaseDataElement) -> List[Path]:
    """The leaves of a sample's data fields: one per value of a nested
    data element (``gt_instances``, ``gt_instance_labels``, ``gt_fields``),
    one per item of a list-valued one."""
    paths = []
    for field in sample.keys():
        element = sample.get(field)
        if not isinstance(element, BaseDataElement):
            paths.append((field, ))
            continue
        for key in element.keys():
            value = element.get(key)
            if isinstance(value, (list, tuple)):
                paths += [(field, key, i) for i in range(len(value))]
            else:
                paths.append((field, key))
    return paths


def get_path(sample: BaseDataElement, path: Path):
    value = sample.get(path[0])
    for step in path[1:]:
        value = value[step] if isinstance(step, int) else value.get(step)
    return value


def set_path(sample: BaseDataElement, path: Path, value) -> None:
    """Set a leaf of ``sample`` only: its nested element is copied first
    (``clone()`` is shallow, so the element may be another sample's)."""
    if len(path) == 1:
        sample.set_field(value, path[0])
        return
    element = sample.get(path[0]).clone()
    if len(path) == 3:  # an item of a list-valued field
        items = list(element.get(path[1]))
        items[path[2]] = value
        value = items
    element.set_field(value, path[1])
    sample.set_field(element, path[0])


def delete_path(sample: BaseDataElement, path: Path) -> None:
    if len(path) == 1:
        delattr(sample, path[0])
        return
    element = sample.get(path[0]).clone()
    if path[1] in element:
        delattr(element, path[1])
    sample.set_field(element, path[0])


def _stackable(values) -> bool:
    return all(torch.is_tensor(v) for v in values) and len(
        {tuple(v.shape) for v in values}) == 1


def _all_equal(values) -> bool:
    first = values[0]
    try:
        for v in values[1:]:
            if isinstance(first, np.ndarray) or isinstance(v, np.ndarray):
                if not (isinstance(first, np.ndarray) and isinstance(
                        v, np.ndarray) and np.array_equal(first, v)):
                    return False
            elif torch.is_tensor(first) or torch.is_tensor(v):
                if not (torch.is_tensor(first) and torch.is_tensor(v)
                        and first.shape == v.shape and torch.equal(first, v)):
                    return False
            elif not bool(first == v):
                return False
    except Exception:  # noqa: BLE001 (not comparable: treat as different)
        return False
    return True


def _random_like(value, generator: torch.Generator):
    """Random contents of ``value``'s shape: floating tensors and arrays
    uniform in [0, 1); integer, boolean and other values kept."""
    if torch.is_tensor(value) and value.is_floating_point():
        return torch.rand(value.shape, generator=generator,
                          dtype=value.dtype).to(value.device)
    if isinstance(value, np.ndarray) and np.issubdtype(value.dtype,
                                                       np.floating):
        noise = torch.rand(value.shape, generator=generator,
                           dtype=torch.float64)
        return noise.numpy().astype(value.dtype)
    return value


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

    def select(self, batch, indices):
        samples = batch['data_samples']
        index = torch.as_tensor(list(indices), dtype=torch.long,
                                device=batch['inputs'].device)
        return dict(inputs=batch['inputs'][index],
                    data_samples=[samples[i].clone() for i in indices])

    def probe(self, batch, size, generator):
        samples = batch['data_samples']
        inputs = batch['inputs']
        picked = [samples[i % len(samples)].clone() for i in range(size)]
        for sample in picked:
            for path in data_paths(sample):
                value = get_path(sample, path)
                set_path(sample, path, _random_like(value, generator))
        noise = torch.randn((size, ) + inputs.shape[1:], generator=generator,
                            dtype=inputs.dtype).to(inputs.device)
        return dict(inputs=noise, data_samples=picked)

    def to_float64(self, batch):
        samples = [s.clone() for s in batch['data_samples']]
        for sample in samples:
            for path in data_paths(sample):
                value = get_path(sample, path)
                if torch.is_tensor(value) and value.is_floating_point():
                    set_path(sample, path, value.double())
        return dict(inputs=batch['inputs'].double(), data_samples=samples)

    @staticmethod
    def _split(batch) -> Tuple[List[torch.Tensor], BaseDataElement,
                               List[Path]]:
        """(stacked tensors, template sample, their paths): see
        :meth:`split`."""
        samples = batch['data_samples']
        template = samples[0].clone()
        vmapped: List[Tuple] = []
        tensors = [batch['inputs']]
        for path in data_paths(template):
            values = [get_path(s, path) for s in samples]
            if _stackable(values):
                vmapped.append(path)
                tensors.append(torch.stack(values))
            elif not _all_equal(values):
                delete_path(template, path)
        for key in list(template.metainfo_keys()):
            if not _all_equal([s.metainfo.get(key) for s in samples]):
                delattr(template, key)
        return tensors, template, vmapped

    def split(self, batch) -> Tuple[List[torch.Tensor], object]:
        """Every per-sample field goes into ``vmap``: tensors, and tensors
        in lists (MSPN/RSN's multi-level heatmaps), of every data field of
        the samples. A non-tensor field or metainfo key that differs between
        the samples cannot be split: it is removed from the template, so a
        loss that reads it fails instead of reading sample 0's value."""
        tensors, template, vmapped = self._split(batch)

        def rebuild(slices) -> Dict:
            sample = template.clone()
            for path, value in zip(vmapped, slices[1:]):
                set_path(sample, path, value)
            return dict(inputs=slices[0].unsqueeze(0), data_samples=[sample])

        return tensors, rebuild

    def per_sample_context(self):
        return accuracy_without_data()

    def static_parts(self, batch):
        """As :meth:`split`, with ``build`` making a whole batch whose
        samples' tensor fields are rows of the given tensors and which holds
        nothing else: no other data field, no metainfo (per-record values,
        which a recorded step would replay as constants). A loss that reads
        one fails when recorded; one that would read it with a default is
        caught by the replays' comparison with eager runs on the batches as
        given. The signature is the tensor fields' paths."""
        tensors, template, vmapped = self._split(batch)
        for path in data_paths(template):
            if path not in vmapped:
                delete_path(template, path)
        for key in list(template.metainfo_keys()):
            delattr(template, key)

        def build(static: List[torch.Tensor]) -> Dict:
            samples = []
            for i in range(len(static[0])):
                sample = template.clone()
                for path, value in zip(vmapped, static[1:]):
                    set_path(sample, path, value[i])
                samples.append(sample)
            return dict(inputs=static[0], data_samples=samples)

        return tensors, build, vmapped

    @contextlib.contextmanager
    def replay_context(self, model):
        """MMPose heads compute a training accuracy on the host
        (``to_numpy``) unless ``train_cfg.compute_acc`` is False: off here
        (a recorded step cannot read data back; the accuracy of private
        batches is not logged by default anyway)."""
        module = self._module(model)
        train_cfg = getattr(module, 'train_cfg', None)
        if not isinstance(train_cfg, dict):
            yield
            return
        saved = train_cfg.get('compute_acc', None)
        train_cfg['compute_acc'] = False
        try:
            yield
        finally:
            if saved is None:
                train_cfg.pop('compute_acc')
            else:
                train_cfg['compute_acc'] = saved
