"""Epoch loop whose iteration is one logical DP step (LOOPS)."""
from typing import Dict, List, Optional

from mmengine.registry import LOOPS
from mmengine.runner import EpochBasedTrainLoop

from ..datasets import is_empty_batch


def split_batch(data_batch: Dict, size: Optional[int]) -> List[Dict]:
    """Split a collated ``dict(inputs=[...], data_samples=[...])`` into
    micro-batches of at most ``size`` samples (no split if ``size`` is None);
    an empty batch gives no micro-batch."""
    n = len(data_batch['inputs'])
    if n == 0:
        return []
    size = size or n
    return [{k: v[i:i + size] for k, v in data_batch.items()}
            for i in range(0, n, size)]


@LOOPS.register_module()
class DPEpochBasedTrainLoop(EpochBasedTrainLoop):
    """``EpochBasedTrainLoop`` where one iteration is one DP-SGD step.

    The Poisson batch of a step is split into micro-batches of at most
    ``max_physical_batch_size`` samples (virtual steps: memory follows the
    micro-batch, the privacy analysis the logical batch); each runs
    ``model.train_step``, whose ``update_params`` clips and accumulates; then
    the optim wrapper's ``private_step`` adds the noise once and updates. An
    empty batch still takes its noise-only step. ``stop_training`` (set by
    :class:`PrivacyHook` at the budget) ends the run before the next step.
    """

    def __init__(self,
                 runner,
                 dataloader,
                 max_epochs: int,
                 max_physical_batch_size: Optional[int] = None,
                 **kwargs) -> None:
        super().__init__(runner, dataloader, max_epochs, **kwargs)
        if max_physical_batch_size is not None and max_physical_batch_size < 1:
            raise ValueError('max_physical_batch_size must be >= 1')
        self.max_physical_batch_size = max_physical_batch_size

    def run(self):
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
        self.runner.call_hook('after_train')
        return self.runner.model

    def run_epoch(self) -> None:
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
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
        micro_batches = ([] if is_empty_batch(data_batch) else split_batch(
            data_batch, self.max_physical_batch_size))
        for micro in micro_batches:
            out = self.runner.model.train_step(
                micro, optim_wrapper=optim_wrapper)
            for k, v in out.items():
                # Per-micro-batch means, weighted by micro-batch size.
                w = len(micro['inputs']) / len(data_batch['inputs'])
                outputs[k] = outputs.get(k, 0) + v * w
        optim_wrapper.private_step()
        self.runner.call_hook(
            'after_train_iter',
            batch_idx=idx,
            data_batch=data_batch,
            outputs=outputs)
        self._iter += 1
