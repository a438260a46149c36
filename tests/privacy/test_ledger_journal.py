"""The write-ahead ledger: on disk before a step's update, atomic, and
counted on resume when it knows more steps than the checkpoint."""
import json
import os

import pytest
import torch

from mmpose_dp.engine.checkpoint_privacy import resume_ledger
from mmpose_dp.privacy import PrivacyLedger
from mmpose_dp.privacy.atomic_write import atomic_write_bytes
from mmpose_dp.privacy.ledger_journal import (LedgerJournal, journal_path,
                                              read_journal)


def test_every_step_is_on_disk_before_its_update_is_applied(tmp_path):
    from mmpose_dp.engine import DPOptimWrapper
    from mmpose_dp.privacy.engines import TensorBatchLoss
    net = torch.nn.Linear(3, 1)
    seen = []

    class Recording(torch.optim.SGD):
        def step(self, closure=None):  # the update of the step
            seen.append(read_journal(path)['steps'])
            return super().step(closure)

    ledger = PrivacyLedger(1e-5)
    path = journal_path(str(tmp_path), ledger.lineage)
    ledger.on_step = LedgerJournal(path)
    ow = DPOptimWrapper(Recording(net.parameters(), lr=0.1),
                        max_grad_norm=1.0, noise_seed=0, engine='vmap')
    ow.setup(net, 'mean', 1.0, 0.1, 2.0, ledger, batch_loss=TensorBatchLoss(
        lambda m, x: m(x).pow(2).mean()))
    for _ in range(3):
        ow.private_micro_batch(net, (torch.randn(2, 3), ), [0, 1])
        ow.private_step()
    assert seen == [1, 2, 3]
    assert read_journal(path) == ledger.state_dict()


def test_a_crash_mid_write_leaves_the_previous_file(tmp_path, monkeypatch):
    path = str(tmp_path / 'ledger.json')
    atomic_write_bytes(path, b'{"old": 1}')

    def crash(*args):
        raise KeyboardInterrupt('killed')

    monkeypatch.setattr(os, 'replace', crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(path, b'{"new": 2}')
    monkeypatch.undo()
    assert json.loads(open(path).read()) == {'old': 1}
    assert os.listdir(tmp_path) == ['ledger.json']  # no temporary left


def _ledger(steps, lineage=None):
    ledger = PrivacyLedger(1e-5)
    if lineage:
        ledger.lineage = lineage
    for _ in range(steps):
        ledger.step(1.0, 0.1)
    return ledger


def test_a_resume_counts_the_journal_when_it_knows_more_steps(tmp_path):
    run = _ledger(7)
    checkpoint = _ledger(5, run.lineage).state_dict()
    LedgerJournal(journal_path(str(tmp_path), run.lineage))(run.state_dict())
    resumed = PrivacyLedger(1e-5)
    extra, path = resume_ledger(resumed, checkpoint, [str(tmp_path)])
    assert (resumed.steps, extra) == (7, 2)
    assert path == journal_path(str(tmp_path), run.lineage)
    assert resumed.lineage == run.lineage


def test_a_journal_of_another_run_is_not_taken(tmp_path):
    other = _ledger(9)
    LedgerJournal(journal_path(str(tmp_path), other.lineage))(
        other.state_dict())
    checkpoint = _ledger(5).state_dict()
    resumed = PrivacyLedger(1e-5)
    assert resume_ledger(resumed, checkpoint, [str(tmp_path)]) == (0, None)
    assert resumed.steps == 5
