"""BufferGuardHook: no private step may change a model buffer (HOOKS)."""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from ..models import NotPrivateError, changed_buffers, snapshot_buffers


@HOOKS.register_module()
class BufferGuardHook(Hook):
    """Stops the run if the first private step of an epoch changed a model
    buffer: a buffer updated from private batches leaves the model without
    noise. The start-up check (PrivacyHook) refuses the known modules with
    running statistics; this catches the rest at run time."""

    priority = 'ABOVE_NORMAL'

    def __init__(self):
        self._buffers = None

    @staticmethod
    def _model(runner):
        model = runner.model
        return model.module if is_model_wrapper(model) else model

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if batch_idx == 0:
            self._buffers = snapshot_buffers(self._model(runner))

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        if self._buffers is None:
            return
        changed = changed_buffers(self._model(runner), self._buffers)
        self._buffers = None
        if changed:
            raise NotPrivateError(
                f'a private step changed model buffers {changed[:10]}: they '
                'learn from private data without noise. Remove the module or '
                'keep it in eval mode')
