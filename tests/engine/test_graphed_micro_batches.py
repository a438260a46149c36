"""Replayed micro-batches (privacy.cuda_graphs) in their eager form on the
CPU: the same static buffers, views and checks as on a GPU, with a recorder
that reruns the engine instead of a CUDA graph."""
import pytest
import torch
from mmengine.dataset import pseudo_collate

from mmpose_dp.engine.loops import DPEpochBasedTrainLoop
from mmpose_dp.engine.mmengine_batch import MMEngineBatchLoss
from mmpose_dp.engine.static_batches import pad_micro_batch, public_dummy
from mmpose_dp.models import detect_loss_reduction
from mmpose_dp.privacy.engines import build_engine
from mmpose_dp.privacy.engines.graphed import (EagerRecorder,
                                               GraphedClippedSum, Recorder)
from mmpose_dp.privacy.errors import NotPrivateError

from ..conftest import build_tiny_pose

P = 4
C = 0.05


class FrozenRecorder(Recorder):
    """What a graph that read stale memory would do: every replay gives
    the outputs of the recorded micro-batch, whatever the buffers hold."""

    def record(self, fn):
        outputs = fn()
        return (lambda: outputs), outputs


class FailingRecorder(Recorder):
    def record(self, fn):
        raise RuntimeError('operation not permitted when stream is capturing')


def _chunks(dataset, sizes):
    """Micro-batches of ``sizes`` real samples (distinct records), each
    padded to P as the loop pads them."""
    out, start = [], 0
    for real in sizes:
        collated = pseudo_collate([dataset[start + i] for i in range(real)])
        start += real
        out.append(pad_micro_batch(collated, list(range(real)), P,
                                   public_dummy(collated)))
    return out


def _setup(synthetic_mpii, kind='hrnet', engine_name='fast'):
    model, dataset = build_tiny_pose(kind, synthetic_mpii)
    engine = build_engine(engine_name, model, MMEngineBatchLoss(),
                          detect_loss_reduction(model))
    return engine, dataset


def _reference(engine, micro, units, padded):
    batch = engine.batch_loss.prepare(engine.model, micro)
    return engine.clipped_sum(batch, units, C, padded)


def _graphed(graphed, engine, micro, units, padded):
    batch = engine.batch_loss.prepare(engine.model, micro)
    return graphed.clipped_sum(batch, units, C, padded)


def _started(synthetic_mpii, recorder, sizes, warm):
    """(engine, graphed, its log, micro-batches of ``sizes``) after the
    first ``warm`` micro-batches ran (the first eager, the second
    recorded)."""
    engine, dataset = _setup(synthetic_mpii)
    logs = []
    graphed = GraphedClippedSum(engine, recorder, log=logs.append)
    chunks = _chunks(dataset, sizes)
    for chunk in chunks[:warm]:
        _graphed(graphed, engine, *chunk)
    return engine, graphed, logs, chunks


def _equal(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b)) and len(a) == len(b)


@pytest.mark.parametrize('kind,engine_name', [('hrnet', 'fast'),
                                              ('simcc', 'fast'),
                                              ('hrnet', 'hooks')])
def test_replays_give_exactly_the_eager_clipped_sums(synthetic_mpii, kind,
                                                     engine_name):
    engine, dataset = _setup(synthetic_mpii, kind, engine_name)
    logs = []
    graphed = GraphedClippedSum(engine, EagerRecorder(), log=logs.append)
    # First: eager (verification); second: recorded; then replays of
    # micro-batches with other records and other padding.
    for micro, units, padded in _chunks(dataset, [3, 4, 2, 4, 1]):
        sums, loss = _graphed(graphed, engine, micro, units, padded)
        ref_sums, ref_loss = _reference(engine, micro, units, padded)
        assert _equal(sums, ref_sums) and torch.equal(loss, ref_loss)
    assert graphed.counts == dict(eager=1, recorded=1, replayed=4)
    assert graphed.reason is None and not logs


def test_replayed_sums_are_the_callers_own(synthetic_mpii):
    engine, dataset = _setup(synthetic_mpii)
    graphed = GraphedClippedSum(engine, EagerRecorder(), verify_replays=0)
    chunks = _chunks(dataset, [4, 4, 4])
    _graphed(graphed, engine, *chunks[0])
    first, _ = _graphed(graphed, engine, *chunks[1])
    kept = [t.clone() for t in first]
    _graphed(graphed, engine, *chunks[2])
    # A later replay does not write into an earlier micro-batch's sums.
    assert _equal(first, kept)


def test_a_replay_that_ignores_its_buffers_is_caught(synthetic_mpii):
    engine, graphed, logs, chunks = _started(
        synthetic_mpii, FrozenRecorder(), [4, 4, 3, 4], warm=2)
    # Recorded on chunk 1: the stale replay would give chunk 1's sums for chunk 2.
    sums, _ = _graphed(graphed, engine, *chunks[2])
    ref, _ = _reference(engine, *chunks[2])
    assert _equal(sums, ref)
    assert graphed.reason and 'differs from the eager' in graphed.reason
    assert any('cuda_graphs off' in line for line in logs)
    # Eager from then on.
    sums, _ = _graphed(graphed, engine, *chunks[3])
    assert _equal(sums, _reference(engine, *chunks[3])[0])
    assert graphed.counts['eager'] == 2
    # With cuda_graphs=True the same finding refuses the run (the engine is
    # verified already: this one records on its first micro-batch).
    strict = GraphedClippedSum(engine, FrozenRecorder(), strict=True,
                               log=logs.append)
    _graphed(strict, engine, *chunks[0])
    with pytest.raises(NotPrivateError, match='differs from the eager'):
        _graphed(strict, engine, *chunks[1])


def test_a_failed_recording_falls_back_to_eager(synthetic_mpii):
    engine, graphed, logs, chunks = _started(
        synthetic_mpii, FailingRecorder(), [4, 2], warm=1)
    sums, _ = _graphed(graphed, engine, *chunks[1])
    assert _equal(sums, _reference(engine, *chunks[1])[0])
    assert 'recording failed (RuntimeError: operation not permitted' in \
        graphed.reason
    strict = GraphedClippedSum(engine, FailingRecorder(), strict=True,
                               log=logs.append)
    with pytest.raises(RuntimeError, match="cuda_graphs='auto'"):
        _graphed(strict, engine, *chunks[0])  # records: engine verified


def test_units_of_several_samples_run_eagerly(synthetic_mpii):
    engine, graphed, logs, chunks = _started(
        synthetic_mpii, EagerRecorder(), [4, 4, 4], warm=2)
    micro, _, _ = chunks[2]
    units = [0, 0, 1, 2]  # samples 0 and 1 one image
    sums, _ = _graphed(graphed, engine, micro, units, 0)
    assert _equal(sums, _reference(engine, micro, units, 0)[0])
    assert graphed.counts['eager'] == 2 and graphed.reason is None
    assert any('not one per sample' in line for line in logs)


def test_a_micro_batch_with_other_tensor_fields_runs_eagerly(
        synthetic_mpii):
    from mmengine.structures import InstanceData
    engine, graphed, logs, chunks = _started(
        synthetic_mpii, EagerRecorder(), [4, 4, 4], warm=2)
    micro, units, padded = chunks[2]
    # One more tensor field than the recorded buffers hold.
    for sample in micro['data_samples']:
        sample.extra = InstanceData(weights=torch.ones(1, 16))
    sums, _ = _graphed(graphed, engine, micro, units, padded)
    assert _equal(sums, _reference(engine, micro, units, padded)[0])
    assert graphed.counts['eager'] == 2
    assert any('tensor fields or shapes differ' in line for line in logs)


class ReadsMetainfo:
    """A loss that reads a sample's metainfo with a default: the recorded
    batch holds no metainfo, so it would silently compute another loss."""

    def __init__(self, batch_loss):
        self.inner = batch_loss

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def loss(self, model, batch):
        scale = batch['data_samples'][0].metainfo.get('loss_scale', 1.0)
        return self.inner.loss(model, batch) * scale


def test_a_recording_that_lost_what_the_loss_reads_is_caught(
        synthetic_mpii):
    engine, dataset = _setup(synthetic_mpii)
    engine.batch_loss = ReadsMetainfo(engine.batch_loss)
    logs = []
    graphed = GraphedClippedSum(engine, EagerRecorder(), log=logs.append)
    chunks = _chunks(dataset, [4, 4])
    for micro, _, _ in chunks:
        for sample in micro['data_samples']:
            sample.set_metainfo(dict(loss_scale=1e3))
    _graphed(graphed, engine, *chunks[0])
    sums, _ = _graphed(graphed, engine, *chunks[1])
    assert _equal(sums, _reference(engine, *chunks[1])[0])
    assert graphed.reason and 'does not compute what' in graphed.reason


def test_recorded_loss_computes_no_host_accuracy(synthetic_mpii):
    engine, dataset = _setup(synthetic_mpii)
    model = engine.model
    with engine.batch_loss.replay_context(model):
        assert model.train_cfg['compute_acc'] is False
    assert 'compute_acc' not in model.train_cfg


def test_cuda_graph_settings_are_checked():
    with pytest.raises(ValueError, match='must be True, False or'):
        DPEpochBasedTrainLoop.__init__(object.__new__(DPEpochBasedTrainLoop),
                                       None, None, 1, cuda_graphs='yes')
    with pytest.raises(ValueError, match='set privacy.physical_batch_size'):
        DPEpochBasedTrainLoop.__init__(object.__new__(DPEpochBasedTrainLoop),
                                       None, None, 1, cuda_graphs=True)


def _train(tmp_path, data_root, name, **privacy):
    from mmpose_dp.engine.runner import DPRunner

    from ..conftest import tiny_config
    cfg = tiny_config(data_root, str(tmp_path / name), **{
        'train_dataloader.batch_size': 8, 'train_cfg.max_epochs': 1,
        'train_cfg.val_interval': 2, 'randomness': dict(seed=0),
        'default_hooks.checkpoint.interval': 2,
        'privacy.noise_seed': 3, 'privacy.sampler_seed': 4,
        'privacy.physical_batch_size': P, **{
            f'privacy.{k}': v for k, v in privacy.items()}})
    runner = DPRunner.from_cfg(cfg)
    runner.train()
    return runner


def test_a_run_with_replays_trains_exactly_as_the_eager_run(
        tmp_path, synthetic_mpii, monkeypatch):
    import mmpose_dp.engine.loops as loops
    eager = _train(tmp_path, synthetic_mpii, 'eager')
    # The CPU's eager form of the recorder, through the real loop.
    monkeypatch.setitem(loops.RECORDERS, 'cpu', EagerRecorder)
    graphed = _train(tmp_path, synthetic_mpii, 'graphed', cuda_graphs=True)
    counts = graphed.optim_wrapper.graphed.counts
    assert counts['replayed'] >= 4 and counts['recorded'] == 1, counts
    assert graphed.optim_wrapper.ledger.steps == \
        eager.optim_wrapper.ledger.steps
    a = eager.model.state_dict()
    b = graphed.model.state_dict()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, differ[:5]


def test_auto_on_the_cpu_runs_eagerly_and_says_why(tmp_path,
                                                   synthetic_mpii):
    from mmengine.logging import MMLogger
    runner = _train(tmp_path, synthetic_mpii, 'auto', cuda_graphs='auto')
    assert runner.optim_wrapper.graphed is None
    log = open(MMLogger.get_current_instance().log_file).read()
    assert "cuda_graphs='auto': eager steps (the model is not on a CUDA " \
        'device)' in log
