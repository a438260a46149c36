"""Keep (fresh run) or restore (resume) the secret keys of a mechanism
with memory; see :mod:`mmpose_dp.privacy.secret_store`."""
from typing import Optional

from mmengine.dist import get_dist_info

from ..privacy import NoiseStream
from ..privacy.secret_store import SecretStore


def keep_secret_keys(runner, session, optim_wrapper, sampler,
                     secret_dir: Optional[str] = None) -> None:
    """For a mechanism that needs them (``keeps_keys``): on a resume, the
    noise and sampler keys the run kept under its ledger lineage; on a fresh
    run, keep them there. Fixed test keys are neither kept nor replaced."""
    ledger = session.ledger
    if not ledger.mechanism.keeps_keys:
        return
    store = SecretStore(secret_dir)
    secret = {}
    if not optim_wrapper.noise.fixed:
        secret['noise'] = optim_wrapper.noise
    if not sampler.fixed_seed:
        secret['sampler'] = sampler
    if not secret:
        return
    if session.resumed_plan is not None:
        keys = store.load(ledger.lineage)
        if 'noise' in secret:
            optim_wrapper.noise = NoiseStream.restored(keys['noise'])
        if 'sampler' in secret:
            sampler.restore_key(keys['sampler'])
        runner.logger.info(
            f'[privacy] {ledger.mechanism!r}: the run continues with the '
            f'secret keys it kept in {store.path(ledger.lineage)}')
        return
    if get_dist_info()[0] == 0:
        path = store.save(ledger.lineage, {
            name: holder.key for name, holder in secret.items()})
        runner.logger.warning(
            f'[privacy] {ledger.mechanism!r} needs its secret keys to be '
            f'resumed: kept in {path} (mode 0600, outside the work dir). '
            'Whoever reads that file can subtract the noise of this run: '
            'never share it, delete it when the run will not be resumed')
