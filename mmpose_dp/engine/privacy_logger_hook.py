"""PrivacyLoggerHook: epsilon, sigma, q, steps and delta in every log."""
import math

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from ..privacy import statement_line
from .privacy_session import find_session


@HOOKS.register_module()
class PrivacyLoggerHook(Hook):
    """Puts ``epsilon``, ``noise_multiplier``, ``sample_rate``,
    ``privacy_steps`` and ``delta`` in the message hub every ``interval``
    iterations (default: the LoggerHook's), at the end of each epoch, at the
    last step and at a budget stop, so the text/JSON log and the visualiser
    backends show them; logs what ``engine='auto'`` chose once it has; and
    at ``after_train`` logs the final PRV and RDP epsilon and what they
    protect (also as the message hub's ``privacy_final`` info).

    Args:
        interval: log interval in iterations.
    """

    priority = 'ABOVE_NORMAL'  # before LoggerHook reads the scalars

    def __init__(self, interval=None) -> None:
        self.interval = interval
        self._engine_logged = False

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        session = find_session(runner)
        self._log_engine_choice(runner, session)
        interval = self.interval or logger_interval(runner)
        if (self.every_n_inner_iters(batch_idx, interval)
                or self.end_of_epoch(runner.train_dataloader, batch_idx)
                or runner.iter + 1 == runner.max_iters
                or session.budget_spent):
            ow = runner.optim_wrapper
            eps = session.tracker.epsilon() if session.tracker else math.inf
            for key, value in dict(
                    epsilon=eps, noise_multiplier=ow.noise_multiplier,
                    sample_rate=ow.sample_rate,
                    privacy_steps=session.ledger.steps,
                    delta=session.delta).items():
                runner.message_hub.update_scalar(f'train/{key}', float(value))

    def _log_engine_choice(self, runner, session) -> None:
        engine = getattr(runner.optim_wrapper, 'engine', None)
        report = getattr(engine, 'report', None)
        if report and not self._engine_logged:
            self._engine_logged = True
            runner.logger.info('[privacy] clipping engine auto: ' +
                               '; '.join(report))
            log_functorch(runner, engine.chosen)
        chosen = getattr(engine, 'chosen', None)
        if chosen is not None and session.plan is not None:
            session.plan = session.plan.replace(engine=chosen.name)

    def after_train(self, runner) -> None:
        session = find_session(runner)
        ledger = session.ledger
        if ledger is None or ledger.steps == 0:
            return
        ow = runner.optim_wrapper
        eps = ledger.epsilon() if ow.noise_multiplier > 0 else math.inf
        eps_rdp = ledger.epsilon_rdp()
        runner.message_hub.update_info('privacy_final', dict(
            epsilon=eps, epsilon_rdp=eps_rdp, delta=session.delta,
            steps=ledger.steps))
        runner.logger.info(
            f'[privacy] final: ({eps:.4f}, {session.delta:.3g})-DP by the '
            f'PRV accountant (upper bound; RDP gives {eps_rdp:.4f}) after '
            f'{ledger.steps} steps at noise_multiplier='
            f'{ow.noise_multiplier:.4f}, sample_rate='
            f'{ow.sample_rate:.5g}, max_grad_norm={ow.max_grad_norm}; '
            f'{statement_line(session.plan.statement)}')


def log_functorch(runner, engine) -> None:
    modules = getattr(engine, 'functorch_modules', None)
    if modules:
        runner.logger.info(
            f'[privacy] hooks: per-sample gradients of {len(modules)} '
            "module(s) come from Opacus' functorch fallback (one "
            f'vmapped call of their forward, exact): {modules[:6]}')


def logger_interval(runner) -> int:
    for hook in runner.hooks:
        if type(hook).__name__ == 'LoggerHook':
            return hook.interval
    return 50
