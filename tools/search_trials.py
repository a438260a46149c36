"""The pieces of tools/private_search.py: the plan every trial shares, one
trial (train, check its ledger, score), and the release of the best."""
import argparse
import json
import math
import os
import os.path as osp
import shutil
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
#: The selection metrics tried in order when --metric is not given.
METRICS = ('PCK', 'coco/AP', 'AUC')


class TrialFailed(RuntimeError):
    pass


def load_config(config: str, cfg_options):
    from mmengine.config import Config, DictAction
    cfg = Config.fromfile(config)
    if cfg_options:
        parser = argparse.ArgumentParser()
        parser.add_argument('--o', nargs='+', action=DictAction)
        cfg.merge_from_dict(parser.parse_args(['--o', *cfg_options]).o)
    return cfg


def plan_of(config: str, cfg_options, trials, target_epsilon, work_dir):
    """sigma, q, steps and delta of every trial, from the config's own
    sampler (the runner is built, nothing is trained)."""
    import mmpose_dp  # noqa: F401  (registers the DP components)
    from mmengine.registry import RUNNERS
    from mmpose_dp.engine.privacy_session import poisson_sampler
    from mmpose_dp.privacy import PrivacyLedger, Segment
    from mmpose_dp.privacy.errors import NotPrivateError
    from mmpose_dp.privacy.mechanisms import build_mechanism
    from mmpose_dp.privacy.search_accounting import (calibrate_search_sigma,
                                                     search_summary)
    cfg = load_config(config, cfg_options)
    privacy = cfg.get('privacy')
    if not privacy:
        raise NotPrivateError(f'{config} has no privacy section: a search '
                              'tunes a DP config')
    if cfg.get('public_validation') is not True:
        raise NotPrivateError(
            'the trials are scored on the validation set, so it must be '
            'public: declare it with public_validation = True in the config '
            '(scoring on private data, with its own noise, is not '
            'implemented)')
    fixed = [k for k in ('noise_seed', 'sampler_seed')
             if privacy.get(k) is not None]
    if fixed:
        raise NotPrivateError(
            f'privacy.{fixed[0]} is fixed: the trials of a search must be '
            'independent runs, each with its own secret seeds; remove it')
    cfg.work_dir = work_dir
    runner = RUNNERS.build(cfg)
    runner.train_loop  # builds the loader and its Poisson sampler
    sampler = poisson_sampler(runner)
    q, steps, n = sampler.sample_rate, runner.max_iters, sampler.num_private
    del runner
    shutil.rmtree(work_dir, ignore_errors=True)
    delta = privacy.get('delta') or 1.0 / (10 * n)
    mechanism = build_mechanism(privacy.get('mechanism'))

    def accounted(sigma):
        return PrivacyLedger(delta, mechanism).accounted(
            Segment(sigma, q, steps))

    if target_epsilon is not None:
        sigma = calibrate_search_sigma(target_epsilon, delta, q, steps,
                                       trials, accounted)
        source = f'calibrated for a search epsilon of {target_epsilon}'
    elif privacy.get('noise_multiplier'):
        sigma, source = float(privacy.noise_multiplier), 'config'
    else:
        sigma = mechanism.plan_noise_multiplier(privacy.target_epsilon,
                                                delta, q, steps)
        source = (f'calibrated for a trial epsilon of '
                  f'{privacy.target_epsilon}')
    segments = accounted(sigma)
    return dict(noise_multiplier=sigma, sigma_source=source, sample_rate=q,
                steps=steps, delta=delta, n_private=n, unit=sampler.unit,
                mechanism=mechanism.config(),
                accounted=[list(s) for s in segments],
                summary=search_summary(segments, delta, trials))


def trial_config(state, trial) -> str:
    """A trial's config file: CONFIG, its draws, the shared sigma, and the
    validation set as the test set (the score)."""
    from mmpose_dp.privacy.search_space import nested
    tree = nested(trial['values'])
    pins = dict(noise_multiplier=state['plan']['noise_multiplier'],
                target_epsilon=None)
    tree['privacy'] = dict(tree.get('privacy', {}), **pins)
    lines = [f"_base_ = [{state['config']!r}]"]
    lines += [f'{key} = {value!r}' for key, value in tree.items()]
    lines += ['test_dataloader = {{_base_.val_dataloader}}',
              'test_evaluator = {{_base_.val_evaluator}}']
    return '\n'.join(lines) + '\n'


def run(cmd, log: str) -> None:
    with open(log, 'a') as f:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=f,
                              stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise TrialFailed(f'failed ({proc.returncode}): {" ".join(cmd)}; see '
                          f'{log}; rerun the search to resume it')


def run_trial(state, trial, private: str) -> float:
    """Train (or resume) one trial, check its ledger, return its score."""
    work = osp.join(private, 'trials', trial['name'])
    config = work + '.py'  # outside the work dir, which gets a dump of it
    os.makedirs(work, exist_ok=True)
    with open(config, 'w') as f:
        f.write(trial_config(state, trial))
    options = state['cfg_options']
    opts = ['--cfg-options', *options] if options else []
    last = osp.join(work, 'last_checkpoint')
    if not trained(last, state['plan']['steps']):
        # An interrupted trial continues from its last checkpoint.
        resume = ['--resume'] if osp.exists(last) else []
        run([sys.executable, 'tools/train.py', config, '--work-dir', work,
             *resume, *opts], osp.join(work, 'train.log'))
    with open(last) as f:
        ckpt = f.read().strip()
    trial['checkpoint'], trial['config'] = ckpt, osp.join(
        work, osp.basename(config))
    trial['statement'] = check_ledger(state, ckpt)
    # The score reads the validation set; options for it apply to the test.
    test_opts = [o.replace('val_', 'test_', 1) for o in options
                 if o.startswith(('val_dataloader', 'val_evaluator'))]
    opts = ['--cfg-options', *options, *test_opts] if options else []
    metrics_file = osp.join(work, 'metrics.json')
    run([sys.executable, 'tools/test.py', config, ckpt, '--work-dir',
         osp.join(work, 'test'), '--out', metrics_file, *opts],
        osp.join(work, 'test.log'))
    with open(metrics_file) as f:
        metrics = json.load(f)
    names = [state['metric']] if state['metric'] else METRICS
    name = next((m for m in names if m in metrics), None)
    if name is None:
        raise TrialFailed(f'none of the metrics {names} in {metrics_file}: '
                          f'{sorted(metrics)}; give --metric')
    state['metric'] = name
    score = float(metrics[name])
    return score if math.isfinite(score) else -math.inf


def trained(last_checkpoint: str, steps: int) -> bool:
    """Whether the trial's last checkpoint has taken all planned steps (it
    was trained before the search stopped, but not scored)."""
    if not osp.exists(last_checkpoint):
        return False
    from mmpose_dp.engine.checkpoint_loading import load_checkpoint_file
    from mmpose_dp.engine.checkpoint_privacy import privacy_state
    with open(last_checkpoint) as f:
        path = f.read().strip()
    ledger, _ = privacy_state(load_checkpoint_file(path, 'cpu')) if \
        osp.exists(path) else (None, None)
    return bool(ledger) and ledger.get('steps') == steps


def check_ledger(state, ckpt: str) -> dict:
    """Refuse a trial whose ledger is not the plan (sigma, q, steps, delta,
    mechanism) or whose statement differs from the first trial's."""
    from mmpose_dp.engine.checkpoint_loading import load_checkpoint_file
    from mmpose_dp.engine.checkpoint_privacy import privacy_state
    from mmpose_dp.privacy import PrivacyLedger
    ledger_state, plan = privacy_state(load_checkpoint_file(ckpt, 'cpu'))
    if ledger_state is None:
        raise TrialFailed(f'{ckpt} has no privacy ledger')
    ledger = PrivacyLedger.from_state_dict(ledger_state)
    want = state['plan']
    got = [list(s) for s in ledger.accounted()]
    same = (len(got) == len(want['accounted']) and all(
        math.isclose(a, b, rel_tol=1e-9) for g, w in zip(
            got, want['accounted']) for a, b in zip(g, w))
        and math.isclose(ledger.delta, want['delta'], rel_tol=1e-12)
        and ledger.mechanism.config() == want['mechanism'])
    if not same:
        raise TrialFailed(
            f'{ckpt}: the trial accounted {got} at delta {ledger.delta}, '
            f"the search planned {want['accounted']} at {want['delta']}: "
            'its privacy curve differs, so repeat-and-select does not '
            'apply')
    statement = {k: plan.get(k) for k in ('privacy_unit', 'protected',
                                          'public', 'method', 'unit')}
    first = next((t['statement'] for t in state['trials']
                  if t.get('statement')), statement)
    if statement != first:
        raise TrialFailed(f'{ckpt}: the trial protects {statement}, an '
                          f'earlier one {first}; one search, one statement')
    return statement


def release(state, private: str, out: str) -> dict:
    """Copy the best trial and write the search card; returns the card."""
    import torch
    from mmpose_dp.engine.checkpoint_loading import load_checkpoint_file
    from mmpose_dp.engine.checkpoint_privacy import add_search_card
    from search_card import write_card
    scored = [t for t in state['trials'] if t['score'] is not None]
    best = max(scored, key=lambda t: t['score']) if scored else None
    os.makedirs(out, exist_ok=True)
    card = write_card(state, best, out)
    forget_kept_keys(state)
    if best is not None:
        ckpt = load_checkpoint_file(best['checkpoint'], 'cpu')
        add_search_card(ckpt, card)
        torch.save(ckpt, osp.join(out, 'model.pth'))
        shutil.copyfile(best['config'], osp.join(out, 'config.py'))
    return card


def forget_kept_keys(state) -> int:
    """Delete the secret keys that trials with a mechanism with memory
    (BandMF) kept for a resume: no trial is resumed after the release, and
    whoever read the best trial's keys could subtract its noise. Returns
    how many key files were deleted."""
    from mmpose_dp.engine.checkpoint_loading import load_checkpoint_file
    from mmpose_dp.engine.checkpoint_privacy import privacy_state
    from mmpose_dp.privacy.secret_store import SecretStore
    privacy = load_config(state['config'], state['cfg_options']).privacy
    store = SecretStore(privacy.get('secret_dir'))
    deleted = 0
    for trial in state['trials']:
        ckpt = trial.get('checkpoint')
        if not ckpt or not osp.exists(ckpt):
            continue
        ledger, _ = privacy_state(load_checkpoint_file(ckpt, 'cpu'))
        if ledger and ledger.get('lineage'):
            deleted += store.forget(ledger['lineage'])
    return deleted
