"""kill -9 at a random step, then --resume: every step taken is counted,
in the ledger file and the checkpoint, and the final epsilon is theirs."""
import glob
import os.path as osp
import random
import re
import signal
import subprocess
import sys
import time

from mmpose_dp.engine.checkpoint_loading import load_checkpoint_file
from mmpose_dp.privacy import PrivacyLedger
from mmpose_dp.privacy.ledger_journal import read_journal

from ..conftest import ROOT
from .test_train_test_e2e import _config, _run

STEPS_PER_EPOCH, EPOCHS = 4, 4


def _logged_steps(work: str) -> int:
    """Training iterations in the run's text log (logger interval 1)."""
    logs = glob.glob(osp.join(work, '*', '*.log'))
    if not logs:
        return 0
    text = open(logs[0]).read()
    return len(re.findall(r'Epoch\(train\)\s+\[\d+\]\[\s*\d+/\d+\]', text))


def test_a_run_killed_and_resumed_counts_every_step(tmp_path,
                                                    synthetic_mpii):
    # A step inside an epoch, so that steps were taken (and logged) after
    # the last checkpoint; any such step must do.
    kill_after = random.Random(16).choice(
        [e * STEPS_PER_EPOCH + r for e in (1, 2) for r in (1, 2, 3)])
    work = str(tmp_path / 'work')
    cfg = _config(tmp_path, synthetic_mpii, **{
        'privacy.target_epsilon': None, 'privacy.noise_multiplier': 1.0,
        'train_cfg.max_epochs': EPOCHS, 'train_cfg.val_interval': 1,
        'default_hooks.logger.interval': 1,
        'default_hooks.checkpoint.interval': 1,
        'default_hooks.checkpoint.max_keep_ckpts': 10})
    proc = subprocess.Popen([sys.executable, 'tools/train.py', cfg,
                             '--work-dir', work], cwd=ROOT,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while _logged_steps(work) < kill_after:
        assert proc.poll() is None, 'the run ended before the kill'
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    logged = _logged_steps(work)
    resumed_from = max(glob.glob(osp.join(work, 'epoch_*.pth')),
                       key=osp.getmtime)
    resumed_iter = load_checkpoint_file(resumed_from)['meta']['iter']
    assert resumed_iter < logged  # steps were taken after the checkpoint

    out = _run('tools/train.py', cfg, '--work-dir', work, '--resume')
    log = out.stdout + out.stderr
    total = STEPS_PER_EPOCH * EPOCHS
    final = load_checkpoint_file(osp.join(work, f'epoch_{EPOCHS}.pth'))
    state = final['privacy_ledger']
    journals = glob.glob(osp.join(work, 'privacy_ledger_*.json'))
    assert [read_journal(j) for j in journals] == [state]
    # Every step taken before the kill (at least those logged), then
    # every step after the resume.
    assert state['steps'] >= logged + (total - resumed_iter)
    ledger = PrivacyLedger(state['delta'])
    ledger.load_state_dict(state)
    printed = re.search(r'\[privacy\] final: \(([\d.]+), ', log).group(1)
    assert float(printed) == round(ledger.epsilon(), 4)
    assert f"after {state['steps']} steps" in log
