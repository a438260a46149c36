"""PrivacyCheckpointHook: the ledger and plan in and out of checkpoints."""
import os.path as osp
from typing import Dict

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from ..models import NotPrivateError
from ..privacy.ledger_journal import journal_path
from ..privacy.plan import PrivacyPlan
from .checkpoint_loading import load_checkpoint_file
from .checkpoint_privacy import (add_privacy_state, checkpoint_folder,
                                 privacy_state, resume_ledger,
                                 scrub_private_scalars)
from .model_preparation import pretrained_checkpoints
from .privacy_session import find_session, unwrapped_model


@HOOKS.register_module()
class PrivacyCheckpointHook(Hook):
    """What a checkpoint carries, and what a run may load.

    * ``before_save_checkpoint``: the ledger and the plan go in (top level
      and ``meta``, so a published file keeps them); every un-noised
      statistic of private batches goes out of the message hub's copy.
    * ``after_load_checkpoint``: ``--resume`` continues the ledger (and its
      write-ahead journal, which counts the steps taken after the
      checkpoint) and refuses a checkpoint without one; ``load_from`` a DP
      checkpoint (or an ``init_cfg`` of type ``Pretrained`` pointing at
      one, checked at ``before_run``) is refused unless
      ``disjoint_from_loaded_checkpoint`` declares this run's private data
      disjoint from that run's; weights that do not fit the model are
      dropped, and the log says which.

    Args:
        disjoint_from_loaded_checkpoint: see above.
    """

    priority = 'NORMAL'

    def __init__(self, disjoint_from_loaded_checkpoint: bool = False) -> None:
        self.disjoint_from_loaded_checkpoint = disjoint_from_loaded_checkpoint

    def before_run(self, runner) -> None:
        """An ``init_cfg`` of type ``Pretrained`` loads weights without
        ``after_load_checkpoint``: a local DP checkpoint there is refused
        as a ``load_from`` one is."""
        if not find_session(runner).training:
            return
        for path in pretrained_checkpoints(runner.cfg.get('model')):
            if not osp.isfile(path):
                continue
            state, _ = privacy_state(load_checkpoint_file(path, 'cpu'))
            if state is not None:
                self._refuse_dp_weights(runner, path, state)

    def _refuse_dp_weights(self, runner, path: str, state: Dict) -> None:
        if not self.disjoint_from_loaded_checkpoint:
            raise NotPrivateError(
                f'{path} was trained with DP ({state["steps"]} steps on '
                'its private data; its privacy record survives publishing '
                "in meta['privacy']). A new ledger is valid only if this "
                "run's private data are disjoint from that run's; on the "
                'same data the two epsilons add up. Use --resume to '
                'continue its ledger, or declare privacy.'
                'disjoint_from_loaded_checkpoint=True')
        runner.logger.warning(
            f'[privacy] {path} was trained with DP ({state["steps"]} steps);'
            ' this run starts a new ledger because privacy.'
            'disjoint_from_loaded_checkpoint=True declares its private data '
            "disjoint from that run's")

    def after_load_checkpoint(self, runner, checkpoint: Dict) -> None:
        session = find_session(runner)
        if not session.training:
            return
        state, plan = privacy_state(checkpoint)
        if getattr(runner, '_resume', False):
            if state is None:
                raise NotPrivateError(
                    'resuming from a checkpoint without a privacy ledger: '
                    'the steps it took were not accounted for. Resume only '
                    'from checkpoints written by a DP run')
            self._resume_ledger(runner, session, state)
            session.resumed_plan = PrivacyPlan.from_dict(plan or {})
            return
        keep_fitting_weights(runner, checkpoint)
        if state is not None:
            self._refuse_dp_weights(runner, f'load_from {runner._load_from}',
                                    state)

    @staticmethod
    def _resume_ledger(runner, session, state: Dict) -> None:
        """The checkpoint's ledger, or its write-ahead journal where that
        counts more steps (taken after the checkpoint, before a crash)."""
        ledger = session.ledger
        folders = [runner.work_dir,
                   checkpoint_folder(getattr(runner, '_load_from', None))]
        extra, path = resume_ledger(ledger, state, folders)
        # Segments do not depend on delta; report at this run's delta.
        ledger.delta = session.delta
        if path is None:
            runner.logger.warning(
                f'[privacy] resumed ledger: {ledger.steps} steps taken '
                'as the checkpoint counts them; no write-ahead journal '
                f'{osp.basename(journal_path("", ledger.lineage))} '
                f'found in {[f for f in folders if f]}, so steps the earlier '
                'run took after this checkpoint (if any) are NOT counted. '
                'Put its journal in the work dir to count them')
        elif extra:
            runner.logger.warning(
                f'[privacy] resumed ledger: the write-ahead journal {path} '
                f'counts {ledger.steps} steps, the checkpoint '
                f'{ledger.steps - extra}: {extra} steps were taken '
                'after the checkpoint (their results may have been '
                f'released), so all {ledger.steps} are counted')
        else:
            runner.logger.info(
                f'[privacy] resumed ledger: {ledger.steps} steps taken '
                f'(checkpoint and write-ahead journal {path} agree)')

    def before_save_checkpoint(self, runner, checkpoint: Dict) -> None:
        session = find_session(runner)
        if session.ledger is None:  # not a training run
            return
        add_privacy_state(checkpoint, session.ledger.state_dict(),
                          session.plan and session.plan.to_dict())
        scrub_private_scalars(checkpoint)


def keep_fitting_weights(runner, checkpoint: Dict) -> None:
    """Drop the ``load_from`` weights whose shapes differ from the model's
    (e.g. a COCO head with 17 keypoints in an MPII model with 16): those
    layers keep their fresh initialisation, and the log says which."""
    weights = checkpoint.get('state_dict', checkpoint)
    shapes = {k: v.shape
              for k, v in unwrapped_model(runner).state_dict().items()}
    mismatched = [
        f'{k} {tuple(v.shape)} -> {tuple(shapes[k])}'
        for k, v in weights.items()
        if k in shapes and hasattr(v, 'shape') and v.shape != shapes[k]]
    for entry in mismatched:
        del weights[entry.split(' ')[0]]
    if mismatched:
        runner.logger.warning(
            f'[privacy] load_from: {len(mismatched)} tensors do not fit '
            'this model and keep their fresh initialisation (checkpoint '
            f'shape -> model shape): {"; ".join(mismatched)}')
