"""Each privacy hook on a toy runner, in process: the budget stop, the
privacy log, the checkpoint hook, and the refusal of a run missing one.

The toy runner has only what a hook reads (logger, message hub, hooks,
iteration counters, the loop's stop flag, save_checkpoint); the full path
through DPRunner is in tests/tools/."""
import itertools
from types import SimpleNamespace

import pytest
import torch
from mmengine.logging import MessageHub, MMLogger

from mmpose_dp.engine import (BudgetStopHook, PrivacyCheckpointHook,
                              PrivacyLoggerHook, PrivacySession)
from mmpose_dp.engine.checkpoint_privacy import LEDGER_KEY, PLAN_KEY
from mmpose_dp.engine.privacy_session import check_privacy_hooks
from mmpose_dp.privacy import EpsilonTracker, NotPrivateError, PrivacyLedger
from mmpose_dp.privacy.plan import PrivacyPlan

SIGMA, Q, DELTA = 1.0, 0.1, 1e-4
_RUNNERS = itertools.count()  # each toy runner its own logger and hub


def _plan(**changes) -> PrivacyPlan:
    plan = PrivacyPlan(
        unit='image', n_private=100, private_data='abc', target_epsilon=8.0,
        delta=DELTA, sample_rate=Q, total_steps=10, noise_multiplier=SIGMA,
        sigma_source='calibrated', max_grad_norm=1.0, method='DP-SGD',
        labels_public=False, privacy_unit='one image', protected='all of it',
        public='nothing', batch_norm=dict(mode='group_norm'))
    return plan.replace(**changes)


def _runner(tmp_path, steps=0, allowed=None, it=0, max_iters=10, **extra):
    session = PrivacySession(target_epsilon=8.0, delta=DELTA)
    session.training = True
    session.ledger = PrivacyLedger(DELTA)
    for _ in range(steps):
        session.ledger.step(SIGMA, Q)
    session.allowed_steps = allowed
    session.tracker = EpsilonTracker(session.ledger, SIGMA, Q, max_iters, 8.0)
    session.plan = _plan()
    saved = []
    name = f'toy_runner_{next(_RUNNERS)}'
    runner = SimpleNamespace(
        hooks=[SimpleNamespace(session=session)],
        logger=MMLogger.get_instance(name, log_file=str(tmp_path / name)),
        message_hub=MessageHub.get_instance(name), work_dir=str(tmp_path),
        iter=it, max_iters=max_iters,
        train_loop=SimpleNamespace(stop_training=False),
        train_dataloader=list(range(max_iters)),
        optim_wrapper=SimpleNamespace(noise_multiplier=SIGMA, sample_rate=Q,
                                      max_grad_norm=1.0),
        save_checkpoint=lambda folder, name: saved.append(name), **extra)
    return runner, session, saved


def _log(runner) -> str:
    """What the toy runner's logger wrote to its file."""
    files = [h for h in runner.logger.handlers if hasattr(h, 'baseFilename')]
    with open(files[0].baseFilename) as f:
        return f.read()


# -- BudgetStopHook --------------------------------------------------------
def test_the_budget_stop_ends_the_loop_and_keeps_the_result(tmp_path):
    runner, _, saved = _runner(tmp_path, steps=3, allowed=3, it=2)
    BudgetStopHook().after_train_iter(runner, 2)
    assert runner.train_loop.stop_training
    assert saved == ['budget_stop_iter_3.pth']
    assert 'stopping: the next step would exceed epsilon=8.0' in _log(runner)


@pytest.mark.parametrize('steps,allowed,it', [
    (2, 3, 1),  # budget left
    (3, None, 2),  # no budget (explicit sigma)
    (10, 10, 9),  # the schedule's last step: the loop ends anyway
])
def test_the_budget_stop_does_nothing_otherwise(tmp_path, steps, allowed, it):
    runner, _, saved = _runner(tmp_path, steps=steps, allowed=allowed, it=it)
    BudgetStopHook().after_train_iter(runner, it)
    assert not runner.train_loop.stop_training and saved == []


# -- PrivacyLoggerHook -----------------------------------------------------
def _scalar(runner, key):
    return runner.message_hub.get_scalar(f'train/{key}').current()


def test_the_log_shows_epsilon_sigma_q_steps_and_delta(tmp_path):
    runner, session, _ = _runner(tmp_path, steps=4, it=3)
    PrivacyLoggerHook(interval=2).after_train_iter(runner, 3)
    assert _scalar(runner, 'privacy_steps') == 4
    assert _scalar(runner, 'noise_multiplier') == SIGMA
    assert _scalar(runner, 'sample_rate') == Q
    assert _scalar(runner, 'delta') == DELTA
    # The tracker's PRV upper bound (its error is scaled to the plan's
    # final epsilon), close to the ledger's own.
    assert _scalar(runner, 'epsilon') == session.tracker.epsilon()
    assert _scalar(runner, 'epsilon') == pytest.approx(
        session.ledger.epsilon(), rel=0.1)


def test_the_log_waits_for_its_interval_but_not_at_a_budget_stop(tmp_path):
    runner, _, _ = _runner(tmp_path, steps=3, it=2)
    PrivacyLoggerHook(interval=4).after_train_iter(runner, 2)
    assert 'train/privacy_steps' not in runner.message_hub.log_scalars
    runner, _, _ = _runner(tmp_path, steps=3, allowed=3, it=2)
    PrivacyLoggerHook(interval=4).after_train_iter(runner, 2)
    assert _scalar(runner, 'privacy_steps') == 3


def test_the_final_log_gives_prv_and_rdp_epsilon_and_the_statement(tmp_path):
    runner, session, _ = _runner(tmp_path, steps=5)
    PrivacyLoggerHook().after_train(runner)
    final = runner.message_hub.get_info('privacy_final')
    assert final['steps'] == 5 and final['delta'] == DELTA
    assert final['epsilon'] == pytest.approx(session.ledger.epsilon())
    assert final['epsilon_rdp'] >= final['epsilon'] * 0.9
    text = _log(runner)
    assert 'after 5 steps at noise_multiplier=1.0000' in text
    assert 'one image' in text


def test_the_log_reports_the_engine_auto_chose_into_the_plan(tmp_path):
    engine = SimpleNamespace(report=['fast: exact'], chosen=SimpleNamespace(
        name='fast', functorch_modules=[]))
    runner, session, _ = _runner(tmp_path, steps=1)
    runner.optim_wrapper.engine = engine
    PrivacyLoggerHook(interval=1).after_train_iter(runner, 0)
    assert session.plan.engine == 'fast'
    assert 'clipping engine auto: fast: exact' in _log(runner)


# -- PrivacyCheckpointHook -------------------------------------------------
def test_a_checkpoint_carries_the_ledger_and_plan_and_no_private_loss(
        tmp_path):
    runner, session, _ = _runner(tmp_path, steps=3)
    checkpoint = dict(message_hub=dict(log_scalars={
        'train/loss': 1.0, 'train/acc_pose': 0.5, 'train/epsilon': 2.0,
        'train/lr': 0.1}))
    PrivacyCheckpointHook().before_save_checkpoint(runner, checkpoint)
    assert checkpoint[LEDGER_KEY]['steps'] == 3
    assert checkpoint['meta']['privacy']['ledger']['steps'] == 3
    assert PrivacyPlan.from_dict(checkpoint[PLAN_KEY]) == session.plan
    assert set(checkpoint['message_hub']['log_scalars']) == {
        'train/epsilon', 'train/lr'}


def _saved(tmp_path, steps=3):
    """A checkpoint written by an earlier run that took ``steps`` steps."""
    (tmp_path / 'first').mkdir()
    runner, _, _ = _runner(tmp_path / 'first', steps=steps)
    checkpoint = {}
    PrivacyCheckpointHook().before_save_checkpoint(runner, checkpoint)
    return checkpoint


def test_a_resume_continues_the_ledger_and_its_plan(tmp_path):
    checkpoint = _saved(tmp_path)
    runner, session, _ = _runner(tmp_path, _resume=True, _load_from=None)
    PrivacyCheckpointHook().after_load_checkpoint(runner, checkpoint)
    assert session.ledger.steps == 3
    assert session.resumed_plan == _plan()


def test_a_resume_from_a_checkpoint_without_a_ledger_is_refused(tmp_path):
    runner, _, _ = _runner(tmp_path, _resume=True, _load_from=None)
    with pytest.raises(NotPrivateError, match='without a privacy ledger'):
        PrivacyCheckpointHook().after_load_checkpoint(runner, {})


def test_load_from_a_dp_checkpoint_needs_disjoint_private_data(tmp_path):
    checkpoint = _saved(tmp_path)
    model = torch.nn.Linear(2, 2)
    runner, session, _ = _runner(tmp_path, _resume=False,
                                 _load_from='x.pth', model=model)
    with pytest.raises(NotPrivateError, match='disjoint_from_loaded'):
        PrivacyCheckpointHook().after_load_checkpoint(runner, checkpoint)
    PrivacyCheckpointHook(disjoint_from_loaded_checkpoint=True
                          ).after_load_checkpoint(runner, checkpoint)
    assert session.ledger.steps == 0  # a new ledger, as declared
    assert 'starts a new ledger' in _log(runner)


def test_load_from_keeps_only_the_weights_that_fit(tmp_path):
    model = torch.nn.Linear(3, 2)
    runner, _, _ = _runner(tmp_path, _resume=False, _load_from='x.pth',
                           model=model)
    weights = dict(weight=torch.zeros(4, 3), bias=torch.zeros(2))
    PrivacyCheckpointHook().after_load_checkpoint(
        runner, dict(state_dict=weights))
    assert set(weights) == {'bias'}
    assert 'weight (4, 3) -> (2, 3)' in _log(runner)


def test_nothing_is_loaded_or_written_outside_training(tmp_path):
    runner, session, _ = _runner(tmp_path, _resume=True, _load_from=None)
    session.training = False
    PrivacyCheckpointHook().after_load_checkpoint(runner, {})  # no refusal


# -- the set of hooks ------------------------------------------------------
def test_a_run_missing_a_privacy_hook_is_refused():
    from mmpose_dp.engine import PrivacyHook
    hooks = [PrivacyHook(target_epsilon=1.0), PrivacyCheckpointHook(),
             PrivacyLoggerHook()]
    with pytest.raises(NotPrivateError,
                       match=r"missing \['BudgetStopHook', 'BufferGuardHook'"):
        check_privacy_hooks(SimpleNamespace(hooks=hooks))


def test_a_resumed_plan_keeps_unit_batch_norm_and_public_set():
    plan = _plan(public_set=dict(id='p1'))
    plan.check_continued_by('image', 'group_norm', 'p1')
    for args, words in [(('instance', 'group_norm', 'p1'), 'privacy unit'),
                        (('image', 'freeze', 'p1'), 'BatchNorm'),
                        (('image', 'group_norm', 'p2'), 'public set')]:
        with pytest.raises(NotPrivateError, match=words):
            plan.check_continued_by(*args)
