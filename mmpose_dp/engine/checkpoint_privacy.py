"""Where a checkpoint keeps its privacy state, and how a resume counts it.

The ledger and the plan are written twice: at the top level of the
checkpoint (``privacy_ledger``, ``privacy_plan``) and in ``meta['privacy']``,
because publishing tools (MMPose's ``publish_model``, most exporters) keep
only ``meta`` and ``state_dict``; a later ``load_from`` of a published file
is then still recognised as a DP model.
"""
import os.path as osp
from typing import Dict, Iterable, List, Optional, Tuple

from ..privacy import PrivacyLedger
from ..privacy.ledger_journal import journal_path, read_journal

LEDGER_KEY = 'privacy_ledger'
PLAN_KEY = 'privacy_plan'
META_KEY = 'privacy'


def add_privacy_state(checkpoint: Dict, ledger_state: Dict,
                      plan: Optional[Dict]) -> None:
    """Put the ledger and plan at the top level and in ``meta``."""
    checkpoint[LEDGER_KEY] = ledger_state
    checkpoint[PLAN_KEY] = plan
    meta = checkpoint.setdefault('meta', {})
    meta[META_KEY] = dict(ledger=ledger_state, plan=plan)


def privacy_state(checkpoint: Dict) -> Tuple[Optional[Dict], Optional[Dict]]:
    """``(ledger state, plan)`` of a checkpoint, from its top level or, for
    a published file, from ``meta``; ``(None, None)`` for a model trained
    without DP."""
    if not isinstance(checkpoint, dict):
        return None, None
    meta = checkpoint.get('meta')
    in_meta = meta.get(META_KEY) if isinstance(meta, dict) else None
    in_meta = in_meta if isinstance(in_meta, dict) else {}
    ledger = checkpoint.get(LEDGER_KEY) or in_meta.get('ledger')
    plan = checkpoint.get(PLAN_KEY) or in_meta.get('plan')
    return ledger, plan


def resume_ledger(ledger: PrivacyLedger, checkpoint_state: Dict,
                  folders: Iterable[str]) -> Tuple[int, Optional[str]]:
    """Load the checkpoint's ledger into ``ledger``, then the write-ahead
    journal of the same lineage if one of ``folders`` holds one with more
    steps (steps taken after that checkpoint).

    Returns ``(steps after the checkpoint's, journal path or None)``.
    """
    ledger.load_state_dict(checkpoint_state)
    at_checkpoint = ledger.steps
    for folder in dict.fromkeys(f for f in folders if f):
        path = journal_path(folder, ledger.lineage)
        state = read_journal(path)
        if state is None:
            continue
        journal = PrivacyLedger(ledger.delta, ledger.mechanism)
        journal.load_state_dict(state)
        if journal.lineage == ledger.lineage and journal.steps > ledger.steps:
            ledger.load_state_dict(state)
        return ledger.steps - at_checkpoint, path
    return 0, None


def checkpoint_folder(path: Optional[str]) -> Optional[str]:
    return osp.dirname(osp.abspath(path)) if path else None


#: Scalars of the message hub that checkpoints may keep: public settings,
#: privacy accounting, and statistics of public data. Every other
#: ``train/`` scalar (loss, accuracy, ...) is a statistic of private
#: batches without noise and is removed before a checkpoint is written.
PUBLIC_TRAIN_SCALARS = frozenset(
    f'train/{k}' for k in (
        'lr', 'epsilon', 'noise_multiplier', 'sample_rate', 'privacy_steps',
        'delta', 'pdp_rank', 'pdp_energy', 'pdp_refresh_time',
        'public_feature_loss'))


def scrub_private_scalars(checkpoint: Dict) -> List[str]:
    """Remove the un-noised statistics of private batches from a
    checkpoint's message hub; returns the keys removed."""
    hub = checkpoint.get('message_hub') or {}
    scalars = hub.get('log_scalars') or {}
    removed = [k for k in scalars
               if k.startswith('train/') and k not in PUBLIC_TRAIN_SCALARS]
    for key in removed:
        del scalars[key]
    return removed


SEARCH_KEY = 'search'


def add_search_card(checkpoint: Dict, card: Dict) -> None:
    """Mark a checkpoint as the best of a private search: ``card`` states
    the whole search's epsilon (tools/private_search.py), kept in ``meta``
    too so that publishing and export carry it."""
    checkpoint['privacy_' + SEARCH_KEY] = card
    checkpoint.setdefault('meta', {}).setdefault(META_KEY, {})[
        SEARCH_KEY] = card


def search_card(checkpoint: Dict) -> Optional[Dict]:
    """The search card of :func:`add_search_card`, or None."""
    if not isinstance(checkpoint, dict):
        return None
    meta = checkpoint.get('meta')
    in_meta = meta.get(META_KEY) if isinstance(meta, dict) else None
    return checkpoint.get('privacy_' + SEARCH_KEY) or (
        in_meta.get(SEARCH_KEY) if isinstance(in_meta, dict) else None)
