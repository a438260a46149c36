"""Epsilon of a DP-SGD run, or the noise multiplier for a target epsilon.

Examples::

    # epsilon of sigma=1.5, q=0.04, 2250 steps, delta=1e-5
    python tools/privacy_calculator.py --noise-multiplier 1.5 \
        --sample-rate 0.04 --steps 2250 --delta 1e-5
    # the same from the data set and training plan (q = B/N, T = E * N/B)
    python tools/privacy_calculator.py --noise-multiplier 3.2 \
        --dataset-size 22246 --batch-size 32 --epochs 25
    # the noise multiplier that reaches epsilon 0.8
    python tools/privacy_calculator.py --target-epsilon 0.8 \
        --dataset-size 22246 --batch-size 32 --epochs 25
    # what a checkpoint's privacy ledger has spent
    python tools/privacy_calculator.py --checkpoint work_dirs/x/epoch_25.pth
    # a private hyperparameter search (tools/private_search.py): about 10
    # trials (logarithmic K) of sigma=1, q=0.01, 5000 steps
    python tools/privacy_calculator.py --noise-multiplier 1 --sample-rate 0.01 \
        --steps 5000 --delta 1e-5 --search logarithmic --mean-trials 10
    # the sigma for which that whole search costs epsilon 8
    python tools/privacy_calculator.py --target-epsilon 8 --sample-rate 0.01 \
        --steps 5000 --delta 1e-5 --search logarithmic --mean-trials 10

Epsilon is the PRV accountant's upper bound (prv-accountant, within 2% of
the true value); RDP (Opacus) is printed for comparison. With --search, the
search's epsilon is RDP repeat-and-select (dp-accounting), and
--target-epsilon is the whole search's budget.
"""
import argparse
import json
import sys

from mmpose_dp.privacy import (PrivacyLedger, calibrate_noise_multiplier,
                               epsilon_prv, epsilon_rdp)
from mmpose_dp.privacy.search_accounting import DISTRIBUTIONS


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split('\n', 2)[2])
    parser.add_argument('--noise-multiplier', type=float)
    parser.add_argument('--target-epsilon', type=float)
    parser.add_argument('--sample-rate', type=float)
    parser.add_argument('--steps', type=int)
    parser.add_argument('--dataset-size', type=int,
                        help='N private units (images, or person instances '
                        "with privacy.unit='instance')")
    parser.add_argument('--batch-size', type=float,
                        help='expected (Poisson) batch size B')
    parser.add_argument('--epochs', type=float)
    parser.add_argument('--delta', type=float,
                        help='default 1 / (10 N) when --dataset-size is set')
    parser.add_argument('--checkpoint', help='read the ledger of a checkpoint')
    parser.add_argument('--search', choices=DISTRIBUTIONS,
                        help='a private search: the distribution of K')
    parser.add_argument('--mean-trials', type=float,
                        help='E[K] of the search (fixed: K)')
    parser.add_argument('--eta', type=float,
                        help='shape of the truncated negative binomial')
    parser.add_argument('--json', action='store_true',
                        help='print one JSON object')
    return parser.parse_args(argv)


def plan(args):
    """(sample_rate, steps, delta) from the arguments."""
    q, steps, delta = args.sample_rate, args.steps, args.delta
    if args.dataset_size is not None:
        if args.batch_size is None:
            raise SystemExit('--dataset-size needs --batch-size')
        q = args.batch_size / args.dataset_size
        if steps is None:
            if args.epochs is None:
                raise SystemExit('give --epochs or --steps')
            # As PoissonBatchSampler: round(1/q) steps per epoch.
            steps = int(round(args.epochs * max(1, round(1 / q))))
        if delta is None:
            delta = 1 / (10 * args.dataset_size)
        elif delta >= 1 / args.dataset_size:
            raise SystemExit(f'--delta {delta} >= 1/N is no privacy')
    if q is None or steps is None or delta is None:
        raise SystemExit('give --sample-rate, --steps and --delta, or '
                         '--dataset-size, --batch-size and --epochs')
    return q, steps, delta


def main(argv=None):
    args = parse_args(argv)
    statement = {}
    if args.checkpoint:
        from mmpose_dp.engine.checkpoint_loading import load_checkpoint_file
        from mmpose_dp.engine.checkpoint_privacy import (privacy_state,
                                                         search_card)
        checkpoint = load_checkpoint_file(args.checkpoint, map_location='cpu')
        state, plan_ = privacy_state(checkpoint)
        search = search_card(checkpoint)
        if search:
            statement['search'] = dict(epsilon=search['epsilon'],
                                       trials=search['trials'],
                                       accountant=search['accountant'])
        if state is None:
            raise SystemExit(f'{args.checkpoint} has no privacy ledger')
        if plan_ is not None:
            from mmpose_dp.privacy import PrivacyPlan
            plan_ = PrivacyPlan.from_dict(plan_)
            statement.update(plan_.statement, unit=plan_.unit,
                             method=plan_.method)
        ledger = PrivacyLedger.from_state_dict(state)
        # What the accountant composes (BandMF: rounds at the group rate).
        segments, delta = ledger.accounted(), ledger.delta
        sigma = ledger.segments[-1].noise_multiplier if segments else None
        q = ledger.segments[-1].sample_rate if segments else None
        steps = ledger.steps
        statement['mechanism'] = repr(ledger.mechanism)
    elif args.search:
        return search(args)
    else:
        q, steps, delta = plan(args)
        if args.target_epsilon is not None:
            sigma = calibrate_noise_multiplier(args.target_epsilon, delta, q,
                                               steps)
        elif args.noise_multiplier is not None:
            sigma = args.noise_multiplier
        else:
            raise SystemExit('give --noise-multiplier or --target-epsilon')
        segments = [(sigma, q, steps)]
    result = dict(
        epsilon=epsilon_prv(segments, delta),
        epsilon_rdp=epsilon_rdp(segments, delta),
        noise_multiplier=sigma, sample_rate=q, steps=steps, delta=delta,
        accountant='PRV upper bound (prv-accountant); RDP from Opacus',
        **statement)
    if args.json:
        print(json.dumps(result))
    else:
        print(f'noise_multiplier={sigma:.4f} sample_rate={q:.6g} '
              f'steps={steps} delta={delta:.3g}')
        print(f'epsilon={result["epsilon"]:.4f} (PRV upper bound)  '
              f'epsilon_rdp={result["epsilon_rdp"]:.4f} (RDP)')
        if 'search' in statement:
            search = statement['search']
            print(f"the best of a private search ({search['trials']}): the "
                  f"whole search spent epsilon={search['epsilon']:.4f} "
                  f"({search['accountant']}); the figures above are one "
                  'trial\'s')
        if 'mechanism' in statement:
            print(f"mechanism: {statement['mechanism']}")
        if 'method' in statement:
            print(f"method: {statement.get('method')}")
            print(f"privacy unit: {statement.get('privacy_unit')}")
            print(f"protected: {statement.get('protected')}")
            print(f"public: {statement.get('public')}")
    return result


def search(args):
    """The epsilon of a whole search (or its sigma for --target-epsilon)."""
    from mmpose_dp.privacy.search_accounting import (TrialCount,
                                                     calibrate_search_sigma,
                                                     search_summary)
    if args.mean_trials is None:
        raise SystemExit('--search needs --mean-trials')
    trials = TrialCount(args.search, args.mean_trials, args.eta)
    q, steps, delta = plan(args)
    if args.target_epsilon is not None:
        sigma = calibrate_search_sigma(args.target_epsilon, delta, q, steps,
                                       trials)
    elif args.noise_multiplier is not None:
        sigma = args.noise_multiplier
    else:
        raise SystemExit('give --noise-multiplier or --target-epsilon')
    result = dict(search_summary([(sigma, q, steps)], delta, trials),
                  noise_multiplier=sigma, sample_rate=q, steps=steps)
    if args.json:
        print(json.dumps(result))
    else:
        print(f'every trial: noise_multiplier={sigma:.4f} sample_rate={q:.6g}'
              f' steps={steps} delta={delta:.3g}; one trial: epsilon='
              f"{result['trial_epsilon']:.4f} (PRV), "
              f"{result['trial_epsilon_rdp']:.4f} (RDP)")
        print(f"search of {result['trials']}: epsilon={result['epsilon']:.4f}"
              f" ({result['accountant']})")
        print(f"composing {result['naive_trials']} fixed trials instead: "
              f"epsilon={result['naive_epsilon']:.4f} (PRV), "
              f"{result['naive_epsilon_rdp']:.4f} (RDP)")
    return result


if __name__ == '__main__':
    sys.exit(0 if main() else 1)
