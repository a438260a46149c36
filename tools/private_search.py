"""Tune hyperparameters on the private data and report one honest epsilon.

Runs a random number K of trials (K drawn with a secret seed from
``--distribution``, mean ``--mean-trials``), each an ordinary
``tools/train.py`` run of CONFIG with hyperparameters drawn i.i.d. from
``--space`` and the same noise multiplier, sample rate and steps; scores
every trial on the config's validation set, which the config must declare
public (``public_validation = True``); releases only the best trial (its
config, checkpoint and a search card with the total epsilon of the whole
search: RDP repeat-and-select, Papernot & Steinke 2022) and deletes every
other trial. An interrupted search resumes where it stopped (same K, same
draws, finished trials kept, the running trial resumed).

    python tools/private_search.py configs/dp_hrnet_mpii.py \
        --space configs/search/lr_clip_space.py --mean-trials 10 \
        --distribution logarithmic --out work_dirs/search
    # choose sigma so that the whole search meets epsilon 8
    ... --target-epsilon 8

DIR/private/ holds the secret state (K, the draws) and the trials while the
search runs: never share it. DIR/release/ is what may be shared.
"""
import argparse
import json
import os
import os.path as osp
import shutil
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

from search_trials import (TrialFailed, plan_of, release,  # noqa: E402
                           run_trial)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split('\n', 1)[1])
    p.add_argument('config')
    p.add_argument('--space', required=True,
                   help='a Python file defining space = {key: distribution}')
    p.add_argument('--mean-trials', type=float, required=True,
                   help='E[K] (for --distribution fixed: K itself)')
    p.add_argument('--distribution', default='logarithmic',
                   choices=['logarithmic', 'geometric', 'poisson',
                            'negative_binomial', 'fixed'])
    p.add_argument('--eta', type=float,
                   help='shape of the truncated negative binomial')
    p.add_argument('--out', required=True)
    p.add_argument('--target-epsilon', type=float,
                   help="the whole search's budget: sigma is calibrated so "
                   'that the search meets it (else each trial runs at the '
                   "config's privacy.target_epsilon or noise_multiplier)")
    p.add_argument('--metric', help='the validation metric to maximise '
                   "(default 'PCK', else 'coco/AP')")
    p.add_argument('--search-seed', type=int,
                   help='a fixed seed for K and the draws: for tests only, '
                   'it VOIDS the guarantee (whoever knows it knows K)')
    p.add_argument('--cfg-options', nargs='+', default=[],
                   help='key=value overrides of CONFIG for every trial')
    return p.parse_args(argv)


def load_space(path: str):
    from mmengine.config import Config
    from mmpose_dp.privacy.search_space import check_space
    space = Config.fromfile(path).get('space') or {}
    # Plain JSON values: the state file and the trial configs hold them.
    return check_space(json.loads(json.dumps(space)))


def write_private(path: str, state) -> None:
    os.makedirs(osp.dirname(path), mode=0o700, exist_ok=True)
    tmp = path + '.tmp'
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as f:
        json.dump(state, f, indent=1)
    os.replace(tmp, path)


def new_state(args, private: str):
    """Plan, K and every trial's draws, before any private data is used."""
    import numpy as np
    from mmpose_dp.privacy import derived_seed, secret_seed
    from mmpose_dp.privacy.search_accounting import TrialCount
    from mmpose_dp.privacy.search_space import draw
    trials = TrialCount(args.distribution, args.mean_trials, args.eta)
    space = load_space(args.space)
    plan = plan_of(args.config, args.cfg_options, trials,
                   args.target_epsilon, osp.join(private, 'probe'))
    key = secret_seed() if args.search_seed is None else args.search_seed
    k = trials.draw(np.random.default_rng(derived_seed(key, 0)))
    draws = [draw(space, np.random.default_rng(derived_seed(key, 1, i)))
             for i in range(k)]
    return dict(config=osp.abspath(args.config), space=space,
                cfg_options=args.cfg_options,
                distribution=args.distribution, mean=args.mean_trials,
                eta=args.eta, metric=args.metric,
                target_epsilon=args.target_epsilon,
                fixed_seed=args.search_seed is not None, plan=plan,
                trials=[dict(name=f'trial_{os.urandom(6).hex()}',
                             values=v, score=None) for v in draws])


def check_same_search(state, args) -> None:
    asked = dict(config=osp.abspath(args.config),
                 space=load_space(args.space), cfg_options=args.cfg_options,
                 distribution=args.distribution, mean=args.mean_trials,
                 eta=args.eta, target_epsilon=args.target_epsilon)
    changed = [k for k, v in asked.items() if state[k] != v]
    if changed:
        raise SystemExit(
            f'{args.out} holds a search with other {", ".join(changed)}; '
            'resume it with the same arguments, or use a new --out (a new '
            "search's epsilon adds to this one's)")


def main(argv=None):
    args = parse_args(argv)
    out = osp.abspath(args.out)
    private = osp.join(out, 'private')
    state_file = osp.join(private, 'state.json')
    if osp.exists(osp.join(out, 'release', 'search_card.json')):
        raise SystemExit(
            f'{out} already holds a released search; a new search spends '
            'a new budget: give it a new --out')
    if osp.exists(state_file):
        with open(state_file) as f:
            state = json.load(f)
        check_same_search(state, args)
        print('[search] resuming the search in ' + out, flush=True)
    else:
        state = new_state(args, private)
        write_private(state_file, state)
    plan = state['plan']
    print(f"[search] every trial: noise_multiplier="
          f"{plan['noise_multiplier']:.4f} sample_rate="
          f"{plan['sample_rate']:.5g} steps={plan['steps']} delta="
          f"{plan['delta']:.3g}; trial epsilon "
          f"{plan['summary']['trial_epsilon']:.3f}, search epsilon "
          f"{plan['summary']['epsilon']:.3f} ({plan['summary']['trials']})",
          flush=True)
    summary = plan['summary']
    if summary['naive_epsilon'] < summary['epsilon']:
        from search_card import cheaper_words
        print('[search] note: ' + cheaper_words(
            summary['naive_trials'], summary['naive_epsilon'],
            summary['epsilon']), flush=True)
    trials = state['trials']
    start, done_now = time.time(), 0
    for i, trial in enumerate(trials):
        if trial['score'] is not None:
            continue
        t0 = time.time()
        trial['score'] = run_trial(state, trial, private)
        write_private(state_file, state)
        done_now += 1
        left = (time.time() - start) / done_now * sum(
            t['score'] is None for t in trials)
        # K is secret: this console line is for whoever runs the search.
        print(f"[search] trial {i + 1} of {len(trials)}: "
              f"{trial['values']} -> {trial['score']:.3f} in "
              f'{time.time() - t0:.0f}s; about {left / 60:.1f} min left',
              flush=True)
    card = release(state, private, osp.join(out, 'release'))
    shutil.rmtree(private)
    print(f"[search] released {card['released'] or 'nothing'}: search "
          f"epsilon {card['epsilon']:.3f} at delta {card['delta']:.3g}; "
          'every other trial was deleted', flush=True)
    return card


if __name__ == '__main__':
    try:
        main()
    except TrialFailed as e:
        raise SystemExit(str(e))
