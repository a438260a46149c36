"""Epoch loop whose iteration is one logical DP step (LOOPS)."""
from typing import Dict, List, Optional, Tuple, Union

from mmengine.logging import print_log
from mmengine.registry import LOOPS
from mmengine.runner import EpochBasedTrainLoop

from ..datasets import is_empty_batch, unit_ids, unit_key
from ..privacy.engines.graphed import CudaGraphRecorder, GraphedClippedSum

#: The recorder of replayed micro-batches per device type (a CUDA graph;
#: tests add the CPU's eager form).
RECORDERS = {'cuda': CudaGraphRecorder}
from .static_batches import check_units_fit, pad_micro_batch, public_dummy


def batch_unit_ids(data_batch: Dict, unit: str) -> List[int]:
    """The privacy unit (0, 1, ...) of every sample of a collated batch:
    by image content, or by record (image and annotation id), as the
    sampler grouped them."""
    samples = data_batch['data_samples']
    return unit_ids([unit_key(s.metainfo, unit) for s in samples])


def split_batch(data_batch: Dict, units: List[int],
                size: Optional[int]) -> List[Tuple[Dict, List[int]]]:
    """Split a collated ``dict(inputs=[...], data_samples=[...])`` into
    micro-batches of at most ``size`` samples that never split a privacy
    unit (a unit larger than ``size`` is a micro-batch of its own).

    Returns ``(micro_batch, unit ids within it)`` pairs; no split if
    ``size`` is None, nothing for an empty batch.
    """
    if not units:
        return []
    members: Dict[int, List[int]] = {}
    for index, unit in enumerate(units):
        members.setdefault(unit, []).append(index)
    groups = list(members.values())
    size = size or len(units)
    chunks: List[List[List[int]]] = [[]]
    for group in groups:
        filled = sum(len(g) for g in chunks[-1])
        if chunks[-1] and filled + len(group) > size:
            chunks.append([])
        chunks[-1].append(group)
    out = []
    for chunk in chunks:
        order = [i for group in chunk for i in group]
        ids = [u for u, group in enumerate(chunk) for _ in group]
        out.append(({k: [v[i] for i in order] for k, v in data_batch.items()},
                    ids))
    return out


@LOOPS.register_module()
class DPEpochBasedTrainLoop(EpochBasedTrainLoop):
    """``EpochBasedTrainLoop`` where one iteration is one DP-SGD step.

    The Poisson batch of a step is split into micro-batches of at most
    ``max_physical_batch_size`` samples, never splitting a privacy unit
    (virtual steps: memory follows the micro-batch, the privacy analysis the
    logical batch); each runs ``model.train_step``, whose ``update_params``
    clips and accumulates one contribution per unit; then the optim
    wrapper's ``private_step`` adds the noise once and updates. An empty
    batch still takes its noise-only step. ``stop_training`` (set by
    :class:`BudgetStopHook` at the budget) ends the run before the next step.

    With ``physical_batch_size`` every micro-batch has exactly that many
    samples: a short one is padded with a public dummy crop whose clip
    factor is 0 (:mod:`.static_batches`), for a static shape, and
    ``cuda_graphs`` replays a recorded micro-batch on a GPU
    (:mod:`mmpose_dp.privacy.engines.graphed`).

    Args:
        max_physical_batch_size: micro-batch size (None: no split).
        physical_batch_size: exact micro-batch size (padded); excludes
            ``max_physical_batch_size``.
        log_private_metrics: pass the loss and accuracy of private batches
            (un-noised) to the hooks, i.e. to the text/JSON log and the
            visualiser backends. Off by default: they are statistics of
            private data outside the guarantee. Checkpoints never hold them
            (:class:`PrivacyCheckpointHook` removes them).
        cuda_graphs: ``True`` (replay or refuse), ``'auto'`` (replay where
            possible, otherwise eager with the reason logged) or ``False``
            (default: eager); needs ``physical_batch_size`` and a CUDA model.
    """

    def __init__(self,
                 runner,
                 dataloader,
                 max_epochs: int,
                 max_physical_batch_size: Optional[int] = None,
                 log_private_metrics: bool = False,
                 physical_batch_size: Optional[int] = None,
                 cuda_graphs: Union[bool, str] = False,
                 **kwargs) -> None:
        if cuda_graphs not in (True, False, 'auto'):
            raise ValueError("privacy.cuda_graphs must be True, False or "
                             f"'auto', got {cuda_graphs!r}")
        if cuda_graphs is True and not physical_batch_size:
            raise ValueError(
                'privacy.cuda_graphs=True replays one recorded micro-batch '
                'shape: set privacy.physical_batch_size too')
        super().__init__(runner, dataloader, max_epochs, **kwargs)
        for key, value in (('max_physical_batch_size',
                            max_physical_batch_size),
                           ('physical_batch_size', physical_batch_size)):
            if value is not None and (not isinstance(value, int)
                                      or value < 1):
                raise ValueError(f'privacy.{key} must be an integer >= 1, '
                                 f'got {value!r}')
        if max_physical_batch_size is not None and physical_batch_size:
            raise ValueError(
                'set one of privacy.physical_batch_size (every micro-batch '
                'exactly that size, padded) and '
                'privacy.max_physical_batch_size (at most that size)')
        self.max_physical_batch_size = max_physical_batch_size
        self.physical_batch_size = physical_batch_size
        self.cuda_graphs = cuda_graphs
        self._dummy = None
        self.log_private_metrics = log_private_metrics

    @property
    def unit(self) -> str:
        return getattr(self.dataloader.batch_sampler, 'unit', 'instance')

    def check_static_size(self) -> None:
        """With ``physical_batch_size``: every private unit of the sampler
        fits one micro-batch (refused before the first step otherwise)."""
        units = getattr(self.dataloader.batch_sampler, 'units', None)
        if self.physical_batch_size and units is not None:
            check_units_fit(units, self.physical_batch_size)

    def set_up_cuda_graphs(self) -> Optional[GraphedClippedSum]:
        """Give the optim wrapper a replaying clipped sum where
        ``cuda_graphs`` asks for one and the run allows it."""
        if self.cuda_graphs is False:
            return None
        wrapper = self.runner.optim_wrapper
        why = None
        if not self.physical_batch_size:
            why = 'privacy.physical_batch_size is not set'
        elif wrapper.params[0].device.type not in RECORDERS:
            why = 'the model is not on a CUDA device'
        if why is not None:
            if self.cuda_graphs is True:
                raise ValueError(f'privacy.cuda_graphs=True: {why}')
            print_log(f"[privacy] cuda_graphs='auto': eager steps ({why})",
                      logger='current')
            return None
        wrapper.graphed = GraphedClippedSum(
            wrapper.engine, RECORDERS[wrapper.params[0].device.type](),
            strict=self.cuda_graphs is True,
            log=lambda msg: print_log(msg, logger='current'))
        return wrapper.graphed

    def run(self):
        self.check_static_size()
        graphed = self.set_up_cuda_graphs()
        self.runner.call_hook('before_train')
        while (self._epoch < self._max_epochs and not self.stop_training):
            self.run_epoch()
            self._decide_current_val_interval()
            if (self.runner.val_loop is not None
                    and self._epoch >= self.val_begin
                    and (self._epoch % self.val_interval == 0
                         or self._epoch == self._max_epochs
                         or self.stop_training)):
                self.runner.val_loop.run()
        if graphed is not None:
            print_log(f'[privacy] cuda_graphs: micro-batches {graphed.counts}'
                      + (f'; off: {graphed.reason}' if graphed.reason else ''),
                      logger='current')
        self.runner.call_hook('after_train')
        return self.runner.model

    def run_epoch(self) -> None:
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        # Each batch of the epoch is one ledger step, in order: a mechanism
        # whose batch rule depends on the step (BandMF) gets its index.
        sampler = self.dataloader.batch_sampler
        ledger = getattr(self.runner.optim_wrapper, 'ledger', None)
        if hasattr(sampler, 'first_step') and ledger is not None:
            sampler.first_step = ledger.steps
        for idx, data_batch in enumerate(self.dataloader):
            if self.stop_training:
                break
            self.run_iter(idx, data_batch)
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1

    def run_iter(self, idx, data_batch) -> None:
        self.runner.call_hook(
            'before_train_iter', batch_idx=idx, data_batch=data_batch)
        optim_wrapper = self.runner.optim_wrapper
        outputs: Dict = {}
        units = ([] if is_empty_batch(data_batch) else batch_unit_ids(
            data_batch, self.unit))
        size = self.physical_batch_size or self.max_physical_batch_size
        for micro, micro_units in split_batch(data_batch, units, size):
            padded = 0
            if self.physical_batch_size:
                if self._dummy is None:  # fixed for the run
                    self._dummy = public_dummy(data_batch)
                micro, micro_units, padded = pad_micro_batch(
                    micro, micro_units, self.physical_batch_size,
                    self._dummy)
            out = optim_wrapper.private_micro_batch(
                self.runner.model, micro, micro_units, padded)
            for k, v in out.items():
                # Per-micro-batch means, weighted by micro-batch size (the
                # padding's zero-weight targets add no loss).
                w = len(micro['inputs']) / len(data_batch['inputs'])
                outputs[k] = outputs.get(k, 0) + v * w
        optim_wrapper.private_step()
        self.runner.call_hook(
            'after_train_iter',
            batch_idx=idx,
            data_batch=data_batch,
            outputs=outputs if self.log_private_metrics else {})
        self._iter += 1
