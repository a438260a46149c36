"""BudgetStopHook: end training before a step would exceed the budget."""
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from .privacy_session import find_session


@HOOKS.register_module()
class BudgetStopHook(Hook):
    """Stops the loop (as MMEngine's ``EarlyStoppingHook`` does) once the
    ledger holds every step that ``privacy.target_epsilon`` allows, and
    saves that iteration's checkpoint (``budget_stop_iter_{n}.pth``): mid
    epoch, ``CheckpointHook`` would not, and the result would be lost.

    The optim wrapper refuses a step past the budget on its own
    (:class:`~.optim_wrapper.PrivacyBudgetExceeded`); this hook makes the
    run end cleanly before one is attempted.
    """

    priority = 'LOW'  # after LoggerHook has written the last iteration

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        session = find_session(runner)
        if not session.budget_spent or runner.iter + 1 == runner.max_iters:
            return
        runner.train_loop.stop_training = True
        name = f'budget_stop_iter_{runner.iter + 1}.pth'
        runner.logger.warning(
            f'[privacy] stopping: the next step would exceed '
            f'epsilon={session.target_epsilon}; saving {name}')
        runner.save_checkpoint(runner.work_dir, name)
