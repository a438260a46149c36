"""DPRunner never hands a run an earlier run's visualizer (and work dir)."""
import copy

from mmengine.visualization import Visualizer

from mmpose_dp.engine.runner import DPRunner


def _runner(log_dir: str, name: str) -> DPRunner:
    # Only what build_visualizer reads; no model, data or hooks.
    runner = object.__new__(DPRunner)
    runner._experiment_name = name
    runner._log_dir = log_dir
    return runner


def test_a_second_run_in_one_process_gets_its_own_visualizer(tmp_path):
    cfg = dict(type='Visualizer', name='visualizer_dp_runner_test',
               vis_backends=[dict(type='LocalVisBackend')])
    first = _runner(str(tmp_path / 'a'), '20261202_000000')
    second = _runner(str(tmp_path / 'b'), '20261202_000000')
    # Each run reads its own config (Visualizer writes save_dir into it).
    a = first.build_visualizer(copy.deepcopy(cfg))
    b = second.build_visualizer(copy.deepcopy(cfg))
    assert a is not b and a.instance_name != b.instance_name
    a.add_scalars(dict(loss=1.0), step=1)
    b.add_scalars(dict(loss=2.0), step=1)
    assert (tmp_path / 'a').exists() and (tmp_path / 'b').exists()
    assert Visualizer.get_current_instance() is b
    # A third run with the same experiment name (same second) still gets a
    # visualizer of its own.
    third = _runner(str(tmp_path / 'c'), '20261202_000000')
    c = third.build_visualizer(copy.deepcopy(cfg))
    assert c is not a and c is not b
    c.add_scalars(dict(loss=3.0), step=1)
    assert (tmp_path / 'c').exists()
