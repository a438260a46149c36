"""The write-ahead journal of a privacy ledger.

Checkpoints hold the ledger only as of their own step, but a run may
release more after its last checkpoint (validation scores, logs,
``best_*.pth``) and then crash. The journal is the ledger as a small JSON
file in the work dir, rewritten atomically after every step and before the
step's update is applied, so a resume can count every step ever taken:
``kill -9`` at any moment leaves the previous or the new journal, never a
torn one.
"""
import json
import os.path as osp
from typing import Dict, Optional

from .atomic_write import atomic_write_bytes
from .errors import NotPrivateError

FILENAME = 'privacy_ledger_{lineage}.json'


def journal_path(folder: str, lineage: str) -> str:
    """The journal of the ledger ``lineage`` in ``folder``."""
    return osp.join(folder, FILENAME.format(lineage=lineage))


class LedgerJournal:
    """Writes a ledger's state to ``path`` after every step.

    Attach with ``ledger.on_step = LedgerJournal(path)``.
    """

    def __init__(self, path: str):
        self.path = path

    def __call__(self, state: Dict) -> None:
        atomic_write_bytes(self.path, json.dumps(state).encode())


def read_journal(path: str) -> Optional[Dict]:
    """The ledger state in the journal ``path``, or None if there is none."""
    if not osp.isfile(path):
        return None
    with open(path, 'rb') as f:
        data = f.read()
    try:
        state = json.loads(data.decode())
    except ValueError as err:  # atomic writes make this a foreign file
        raise NotPrivateError(
            f'{path} is not a privacy ledger journal ({err}); the steps it '
            'should count cannot be read. Restore it or remove it knowing '
            'that its steps would then go uncounted') from err
    if not isinstance(state, dict) or 'segments' not in state:
        raise NotPrivateError(f'{path} is not a privacy ledger journal')
    return state
