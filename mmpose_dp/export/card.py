"""The privacy card of an exported model: its guarantee, in JSON and words.

Every number comes from the checkpoint's ledger (epsilon recomputed by the
PRV accountant) and privacy plan; nothing in it is a secret or a statistic
of private data (N_private and the data fingerprint are part of the
guarantee's statement, as in every DP release).
"""
import datetime
import importlib
from typing import Dict, Optional

from ..privacy import PrivacyLedger
from ..privacy.plan import PrivacyPlan

#: The packages whose versions the card records.
PACKAGES = ('mmpose_dp', 'torch', 'mmengine', 'mmcv', 'mmpose', 'opacus',
            'prv_accountant')


def _version(name: str) -> str:
    try:
        return str(importlib.import_module(name).__version__)
    except Exception:  # noqa: BLE001 (a card still names what it can)
        return 'unknown'


def privacy_card(ledger_state: Dict, plan: PrivacyPlan, source: str,
                 search: Optional[Dict] = None) -> Dict:
    """The card of a model trained with ``ledger_state`` and ``plan``; the
    best of a private search (``search``: its card) states the search's
    epsilon, which covers every trial."""
    card = _run_card(ledger_state, plan, source)
    if search:
        card.update(trial_epsilon=card['epsilon'],
                    epsilon=search['epsilon'],
                    epsilon_rdp=search['epsilon'],
                    accountant=search['accountant'] + ', over a private '
                    f"search of {search['trials']}",
                    search=search)
    return card


def _run_card(ledger_state: Dict, plan: PrivacyPlan, source: str) -> Dict:
    ledger = PrivacyLedger.from_state_dict(ledger_state)
    segments = [dict(noise_multiplier=s.noise_multiplier,
                     sample_rate=s.sample_rate, steps=s.steps)
                for s in ledger.segments]
    last = ledger.segments[-1] if ledger.segments else None
    noised = all(s.noise_multiplier > 0 for s in ledger.segments)
    return dict(
        epsilon=ledger.epsilon() if noised and last else float('inf'),
        epsilon_rdp=ledger.epsilon_rdp() if noised and last else
        float('inf'),
        delta=ledger.delta,
        accountant='PRV upper bound (prv-accountant), Poisson-subsampled '
        'Gaussian; RDP (Opacus) beside it',
        privacy_unit=plan.unit,
        privacy_unit_words=plan.privacy_unit,
        n_private=plan.n_private,
        noise_multiplier=last.noise_multiplier if last else None,
        sample_rate=last.sample_rate if last else None,
        steps=ledger.steps, segments=segments,
        mechanism=ledger.mechanism.config(),
        accounted=[list(seg) for seg in ledger.accounted()],
        max_grad_norm=plan.max_grad_norm,
        method=plan.method, protected=plan.protected,
        public=plan.public, labels_public=plan.labels_public,
        engine=plan.engine, batch_norm=plan.batch_norm_mode,
        trainable=plan.trainable, public_set=plan.public_set_id,
        private_data=plan.private_data,
        ledger_lineage=ledger.lineage,
        source_checkpoint=source,
        versions={p: _version(p) for p in PACKAGES},
        date=datetime.date.today().isoformat())


def card_markdown(card: Dict) -> str:
    """PRIVACY.md: what the guarantee says, for a reader of the model."""
    return f"""# Privacy card

This model was trained with differential privacy (mmpose-dp
{card['versions']['mmpose_dp']}).

**Guarantee: ({card['epsilon']:.4g}, {card['delta']:.3g})-differential
privacy** for {card['privacy_unit_words'] or card['privacy_unit']}, by the
{card['accountant']} (RDP gives {card['epsilon_rdp']:.4g}).

- What is protected: {card['protected']}.
- What is treated as public: {card['public']}.
- Method: {card['method']}; clipping engine {card['engine']}.
- Private data: N_private = {card['n_private']} units (fingerprint
  {card['private_data']}); public set {card['public_set']}.
- Mechanism: {card['steps']} steps at noise multiplier
  {card['noise_multiplier']} and sample rate {card['sample_rate']} (Poisson
  sampling), clipping norm C = {card['max_grad_norm']}; every segment in
  `privacy_card.json`.
- Model: BatchNorm {card['batch_norm'] or 'none'}; trained parameters
  {card['trainable'] or 'all'}.
- Source: {card['source_checkpoint']} (ledger lineage
  {card['ledger_lineage']}); exported {card['date']}; versions
  {', '.join(f'{k} {v}' for k, v in card['versions'].items())}.

{_search_words(card)}What it means: the weights (and anything computed from them alone) change
little in distribution whether or not any one privacy unit was in the
training data; epsilon bounds how little. It says nothing about the public
data or the public features named above. {_beyond_words(card)} A later
private run that loads these weights on the same data adds its epsilon to
this one (mmpose-dp refuses it unless the data are declared disjoint).
"""


def _search_words(card: Dict) -> str:
    if not card.get('search'):
        return ''
    return (f"This model is the best of a private hyperparameter search "
            f"({card['search']['trials']}, scored on a public validation "
            f"set); the guarantee above covers the whole search, one trial "
            f"alone spent {card['trial_epsilon']:.4g}. The number of trials "
            f"is secret.\n\n")


def _beyond_words(card: Dict) -> str:
    if card.get('search'):
        return ('Other searches and runs on the same private data spend '
                'privacy beyond this card.')
    return ('Hyperparameter searches and other runs on the same private '
            'data spend privacy beyond this card.')
