"""Keys a run must keep to be resumed, outside anything a user shares.

DP-SGD needs none: a resumed run draws fresh keys, and its noise is as
independent of the earlier noise as the earlier steps' noise was of each
other. A mechanism with memory (BandMF's correlated noise over ``b``
steps, its secret groups of units) needs the *same* keys after a resume.
They are kept in one file per ledger lineage in a private folder
(``privacy.secret_dir``, else ``$MMPOSE_DP_SECRETS``, else
``~/.cache/mmpose-dp/secrets``), mode 0600 in a 0700 folder: never in the
work dir, a checkpoint, a log or an export, which users share. Whoever
reads the file can subtract the noise of that run: delete it when the run
will not be resumed again.
"""
import json
import os
import os.path as osp
from typing import Dict, Optional

from .errors import NotPrivateError


def default_secret_dir() -> str:
    return os.environ.get('MMPOSE_DP_SECRETS') or osp.join(
        osp.expanduser('~'), '.cache', 'mmpose-dp', 'secrets')


class SecretStore:
    """``save`` / ``load`` the keys of a ledger lineage."""

    def __init__(self, folder: Optional[str] = None):
        self.folder = osp.abspath(folder or default_secret_dir())

    def path(self, lineage: str) -> str:
        if not lineage or not str(lineage).isalnum():
            raise ValueError(f'not a ledger lineage: {lineage!r}')
        return osp.join(self.folder, f'{lineage}.json')

    def save(self, lineage: str, keys: Dict[str, int]) -> str:
        os.makedirs(self.folder, mode=0o700, exist_ok=True)
        os.chmod(self.folder, 0o700)
        path = self.path(lineage)
        tmp = path + '.tmp'
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, 'w') as f:
            json.dump({k: str(v) for k, v in keys.items()}, f)
        os.replace(tmp, path)
        return path

    def load(self, lineage: str) -> Dict[str, int]:
        path = self.path(lineage)
        if not osp.isfile(path):
            raise NotPrivateError(
                f'resuming this run needs the secret keys it kept in {path} '
                '(its mechanism correlates noise across steps, or groups '
                'units by a secret permutation); that file is missing. Set '
                'privacy.secret_dir to the folder the run used, or start a '
                'new run')
        with open(path) as f:
            return {k: int(v) for k, v in json.load(f).items()}

    def forget(self, lineage: str) -> bool:
        """Delete the keys of a lineage that will not be resumed again
        (e.g. every trial of a finished private search); True if there
        were any."""
        path = self.path(lineage)
        if not osp.isfile(path):
            return False
        os.remove(path)
        return True
