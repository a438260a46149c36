"""The card of a released private search (search_card.json and .md)."""
import json
import os.path as osp

NOT_RELEASED = (
    'Every other trial (its checkpoints, logs, scores and hyperparameters) '
    'was deleted: those are private outputs that the epsilon above does '
    'not cover.')
SECRET_K = (
    'The number of trials that ran is not stated: K is drawn at random and '
    'kept secret, and the amplification that makes the search cost less '
    'than K runs holds only while K is unknown (given K, the search is the '
    'best of K fixed runs). For the same reason do not publish the '
    "search's console output or how long it took.")


def cheaper_words(trials: int, naive: float, search: float) -> str:
    return (f'At these settings {trials} fixed trials composed (PRV) costs '
            f'less than the random search: epsilon {naive:.3f} against '
            f'{search:.3f} (the RDP bound of repeat-and-select is loose at '
            'large epsilon and few trials); --distribution fixed '
            f'--mean-trials {trials} would have been cheaper.')


def write_card(state, best, out: str) -> dict:
    plan, summary = state['plan'], state['plan']['summary']
    card = dict(
        epsilon=summary['epsilon'], delta=plan['delta'],
        accountant=summary['accountant'], trials=summary['trials'],
        distribution=state['distribution'], mean_trials=state['mean'],
        eta=state['eta'], number_of_trials='secret (see note)',
        trial=dict(epsilon=summary['trial_epsilon'],
                   epsilon_rdp=summary['trial_epsilon_rdp'],
                   noise_multiplier=plan['noise_multiplier'],
                   sigma_source=plan['sigma_source'],
                   sample_rate=plan['sample_rate'], steps=plan['steps'],
                   mechanism=plan['mechanism'],
                   accounted=plan['accounted'],
                   unit=plan['unit'], n_private=plan['n_private']),
        naive=dict(trials=summary['naive_trials'],
                   epsilon=summary['naive_epsilon'],
                   epsilon_rdp=summary['naive_epsilon_rdp']),
        selection=dict(metric=state['metric'],
                       on='the validation set, declared public by the '
                       'config (public_validation = True)'),
        space=state['space'], config=state['config'],
        released=None, notes=[SECRET_K, NOT_RELEASED])
    if best is not None:
        card.update(released='model.pth, config.py',
                    hyperparameters=best['values'],
                    statement=best.get('statement'))
        card['selection']['score'] = best['score']
    else:
        card['notes'].append('K = 0 was drawn (Poisson): no trial ran and '
                             'nothing is released; the epsilon still holds.')
    if card['naive']['epsilon'] < card['epsilon']:
        card['notes'].append(cheaper_words(card['naive']['trials'],
                                           card['naive']['epsilon'],
                                           card['epsilon']))
    if state['fixed_seed']:
        card['notes'].append(
            'FIXED SEARCH SEED (--search-seed): whoever knows it knows K, '
            'which voids the repeat-and-select guarantee. Tests only.')
    with open(osp.join(out, 'search_card.json'), 'w') as f:
        json.dump(card, f, indent=2)
    with open(osp.join(out, 'search_card.md'), 'w') as f:
        f.write(markdown(card))
    return card


def markdown(card: dict) -> str:
    t, n = card['trial'], card['naive']
    lines = [
        '# Private hyperparameter search', '',
        f"**The whole search: epsilon = {card['epsilon']:.3f} at delta = "
        f"{card['delta']:.3g}** ({card['accountant']}).", '',
        f"- number of trials: random, {card['trials']}; how many ran is "
        'secret (see the notes)',
        f"- every trial: noise multiplier {t['noise_multiplier']:.4f} "
        f"({t['sigma_source']}), sample rate {t['sample_rate']:.5g}, "
        f"{t['steps']} steps, mechanism {t['mechanism']}, privacy unit "
        f"{t['unit']} (N_private = {t['n_private']}); one trial alone: "
        f"epsilon {t['epsilon']:.3f} (PRV), {t['epsilon_rdp']:.3f} (RDP)",
        f"- composing {n['trials']} fixed trials instead would cost epsilon "
        f"{n['epsilon']:.3f} (PRV) / {n['epsilon_rdp']:.3f} (RDP)",
        f"- selection: the best {card['selection']['metric']} on "
        f"{card['selection']['on']}",
    ]
    if card['released']:
        lines += [f"- released: {card['released']}; score "
                  f"{card['selection']['score']:.3f}; hyperparameters "
                  f"{card['hyperparameters']}"]
    lines += ['', '## Notes', ''] + [f'- {note}' for note in card['notes']]
    lines += ['', '## Search space', '', '```',
              json.dumps(card['space'], indent=1), '```', '']
    return '\n'.join(lines)
