import torch

from count_step_ops import METADATA, count, main
from mmpose_dp.privacy import add_gaussian_noise, make_generator
from mmpose_dp.privacy.noise import white_noise


def test_counts_one_noise_draw_and_foreach_updates_per_step():
    phases = count('tiny', 'fast', 4)
    step, plain = phases['step'], count('tiny', 'nonprivate', 4)['step']
    # One flat draw per step (not one per parameter tensor), added, and
    # scaled with one foreach call each, beyond the (foreach) optimizer's.
    assert step['normal_'] == 1 and 'normal_' not in plain
    assert step['_foreach_div_'] == plain['_foreach_div_'] + 1
    assert step['_foreach_add_'] >= plain['_foreach_add_'] + 1
    assert 'div_' not in step
    assert sum(step.values()) - sum(plain.values()) <= 10
    assert not set(step) & METADATA
    assert sum(phases['micro-batch'].values()) > 0


def test_the_table_names_every_mode(tmp_path, capsys):
    out = tmp_path / 'ops.md'
    res = main(['--preset', 'tiny', '--batch-size', '2', '--engines', 'fast',
                '--out', str(out)])
    assert set(res) == {'nonprivate', 'fast'}
    text = out.read_text()
    assert '## Ops per step: tiny, batch 2' in text and '| fast |' in text


def test_flat_noise_is_white_and_keyed():
    shapes = [torch.zeros(300, 40), torch.zeros(7), torch.zeros(5, 5, 3)]
    a = white_noise(shapes, 2.0, make_generator(torch.device('cpu'), 3))
    b = white_noise(shapes, 2.0, make_generator(torch.device('cpu'), 3))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert [x.shape for x in a] == [s.shape for s in shapes]
    flat = torch.cat([x.flatten() for x in a])
    assert abs(float(flat.std()) - 2.0) < 0.05 and abs(float(flat.mean())) \
        < 0.05
    # add_gaussian_noise adds exactly these draws.
    targets = [torch.zeros_like(s) for s in shapes]
    add_gaussian_noise(targets, 2.0, make_generator(torch.device('cpu'), 3))
    assert all(torch.equal(t, x) for t, x in zip(targets, a))


def test_mixed_dtypes_get_one_draw_each():
    shapes = [torch.zeros(4), torch.zeros(3, dtype=torch.float64),
              torch.zeros(2, dtype=torch.float64)]
    noise = white_noise(shapes, 1.0, make_generator(torch.device('cpu'), 0))
    assert [n.dtype for n in noise] == [s.dtype for s in shapes]
