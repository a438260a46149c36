"""A neighbouring-dataset check of the production DP step.

The config is run through :class:`DPRunner` as training runs it (the real
Poisson sampler, loop, unit grouping, clipping engine, stages and wrapper)
three times with the same fixed secrets and sigma = 0, for a few steps:

* on D, recording the weights and optimizer state before every step;
* on D' = D without one privacy unit (the sampler's draws are the same, the
  unit's records are left out of every batch it was drawn into);
* on D'' = D with that unit's records replaced (same image, other labels).

Before every step of the second and third runs the first run's state is
loaded, so each step compares the mechanism at the same weights. A release
observer of :class:`DPOptimWrapper` records, per step, the clipped and the
released sums, the divisor, sigma * C and q. The check holds if every
step's released sums differ by at most C (removed) or 2 C (replaced), the
removed unit did change the steps it was drawn in (the check had power),
and the divisor, noise, q and step count are the same in all three runs
and equal the plan's. A fourth run with sigma = 1 checks that released minus
clipped is N(0, (sigma C)^2) per coordinate, independent between steps, and
the run's own sampler, drawing 2000 steps with the check's seed, must give
the binomial mean and variance of Poisson sampling at q with every unit
joining about q of the steps.

Augmentations are seeded per record (the same record gets the same crop in
every run; python's, numpy's and torch's generators and albumentations' own);
the secrets are fixed, so the check is for test data only.
"""
import copy
import os.path as osp
from typing import Callable, Dict, List, Optional

from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import RUNNERS

from ..privacy.sensitivity import release_distance
from .sensitivity_datasets import replace_records, seed_augmentations
from .sensitivity_statistics import noise_check, sampling_check

#: The check's fixed secrets (test data only).
SAMPLER_SEED, NOISE_SEED, AUGMENTATION_SEED = 1234, 4321, 99
#: Slack on the sensitivity bounds, relative to C (float32 round-off).
TOLERANCE = 1e-3


def check_cfg(cfg: Config, work_dir: str, max_grad_norm: float,
              noise_multiplier: float = 0.0,
              options: Optional[Dict] = None) -> Config:
    """``cfg`` made a check run: fixed secrets, the given sigma and C, no
    validation, no checkpoints, log every step."""
    cfg = copy.deepcopy(cfg)
    if options:
        cfg.merge_from_dict(copy.deepcopy(options))
    privacy = cfg.privacy
    privacy.update(target_epsilon=None, noise_multiplier=noise_multiplier,
                   max_grad_norm=max_grad_norm, noise_seed=NOISE_SEED,
                   sampler_seed=SAMPLER_SEED)
    cfg.work_dir = work_dir
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.train_cfg.pop('val_interval', None)
    cfg.train_cfg.pop('val_begin', None)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=-1,
                                        save_last=False)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.randomness = dict(seed=0)
    cfg.train_dataloader.num_workers = 0
    cfg.train_dataloader.persistent_workers = False
    cfg.visualizer = dict(type='PoseLocalVisualizer', name=osp.basename(
        work_dir), vis_backends=[dict(type='LocalVisBackend')])
    return cfg


class _CheckHook(Hook):
    """Records (or replays) the state before every step, the draws and the
    releases; stops after ``steps`` steps."""

    priority = 'VERY_HIGH'

    def __init__(self, steps: int, replay: Optional[List] = None,
                 remove_unit: Optional[int] = None,
                 replace_unit: Optional[int] = None):
        self.steps = steps
        self.replay = replay
        self.remove_unit = remove_unit
        self.replace_unit = replace_unit
        self.states: List = []
        self.draws: List[List[int]] = []
        self.releases: List = []
        self.plan: Dict = {}

    def before_train(self, runner) -> None:
        sampler = runner.train_dataloader.batch_sampler
        dataset = runner.train_dataloader.dataset
        seed_augmentations(dataset, AUGMENTATION_SEED)
        if self.replace_unit is not None:
            replace_records(dataset, [
                dataset.get_data_info(int(i))
                for i in sampler.units[self.replace_unit]])
        records = sampler.records

        def recorded(drawn):
            drawn = [int(u) for u in drawn if u != self.remove_unit]
            self.draws.append(drawn)
            return records(drawn)

        sampler.records = recorded
        self.sampler = sampler
        runner.optim_wrapper.release_observers.append(self.releases.append)
        self.plan = dict(expected_batch_size=sampler.expected_batch_size,
                         sample_rate=sampler.sample_rate,
                         unit=sampler.unit, units=sampler.units)

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        model, ow = runner.model, runner.optim_wrapper
        # Dropout-like modules off: their masks follow the batch layout,
        # which differs between D and D' (each mask is a per-sample draw,
        # so the bound holds for every one of them).
        for module in model.modules():
            if 'Drop' in type(module).__name__:
                module.training = False
        if self.replay is None:
            self.states.append((copy.deepcopy(model.state_dict()),
                                copy.deepcopy(ow.optimizer.state_dict())))
        else:
            weights, optimizer = self.replay[len(self.releases)]
            model.load_state_dict(weights)
            ow.optimizer.load_state_dict(optimizer)

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        if len(self.releases) >= self.steps:
            runner.train_loop.stop_training = True


def _run(cfg: Config, hook: _CheckHook) -> _CheckHook:
    runner = RUNNERS.build(cfg)
    runner.register_hook(hook)
    runner.train()
    ow = runner.optim_wrapper
    hook.plan.update(engine=getattr(getattr(ow.engine, 'chosen', None),
                                    'name', ow.engine.name),
                     ledger_steps=ow.ledger.steps,
                     noise_multiplier=ow.noise_multiplier,
                     max_grad_norm=ow.max_grad_norm)
    return hook


def _unit_to_remove(hook: _CheckHook) -> int:
    """A unit drawn first in a step with other units (so that a mechanism
    that lets the first sample's data leak into the others' gradients
    shows), with the most records."""
    units = hook.plan['units']
    firsts = [d[0] for d in hook.draws[:hook.steps] if len(d) >= 2]
    if not firsts:
        firsts = [d[0] for d in hook.draws[:hook.steps] if d]
    if not firsts:
        raise RuntimeError(
            f'no unit was drawn in {hook.steps} steps; raise --steps or the '
            'batch size')
    return max(firsts, key=lambda u: (len(units[u]), -firsts.index(u)))


def check_sensitivity(cfg: Config, work_dir: str, steps: int = 3,
                      max_grad_norm: float = 1e-4, noise: bool = True,
                      options: Optional[Dict] = None,
                      log: Callable[[str], None] = print) -> Dict:
    """Run the check; returns a report with ``passed`` and ``failures``."""
    def run(name, sigma=0.0, **kwargs):
        return _run(check_cfg(cfg, osp.join(work_dir, name), max_grad_norm,
                              sigma, options), _CheckHook(steps, **kwargs))

    base = run('D')
    unit = _unit_to_remove(base)
    removed = run('D_removed', replay=base.states, remove_unit=unit)
    replaced = run('D_replaced', replay=base.states, replace_unit=unit)
    C = base.plan['max_grad_norm']
    present = [unit in d for d in base.draws[:steps]]
    remove = [release_distance(a.released, b.released) / C
              for a, b in zip(base.releases, removed.releases)]
    replace = [release_distance(a.released, b.released) / C
               for a, b in zip(base.releases, replaced.releases)]
    failures = []
    if max(remove) > 1 + TOLERANCE:
        failures.append(f'removing one unit moved a release by '
                        f'{max(remove):.4g} C (at most 1 C allowed)')
    if max(replace) > 2 + TOLERANCE:
        failures.append(f'replacing one unit moved a release by '
                        f'{max(replace):.4g} C (at most 2 C allowed)')
    if not any(r > 0 for r, p in zip(remove, present) if p):
        failures.append('the removed unit changed no release: the check '
                        'had no power (is it ever drawn, does it train?)')
    if any(r > TOLERANCE for r, p in zip(remove, present) if not p):
        failures.append('a step without the removed unit released '
                        'something else: releases depend on absent data')
    failures += _trace_failures(base, [removed, replaced], steps)
    report = dict(
        engine=base.plan['engine'], unit=base.plan['unit'], steps=steps,
        max_grad_norm=C, removed_unit=unit,
        removed_unit_records=len(base.plan['units'][unit]),
        steps_with_unit=int(sum(present)),
        worst_remove_ratio=max(remove), worst_replace_ratio=max(replace),
        remove_ratios=remove, replace_ratios=replace)
    report['sampling'] = sampling_check(base.sampler, failures)
    if noise:
        report['noise'] = noise_check(run('D_noise', sigma=1.0), failures)
    report.update(passed=not failures, failures=failures)
    log(summary_line(report))
    return report


def _trace_failures(base: _CheckHook, others: List[_CheckHook],
                    steps: int) -> List[str]:
    """Divisor, noise, q and the step count are public: the same whatever
    unit is present, and the plan's."""
    out = []
    for hook in [base] + others:
        if len(hook.releases) != steps:
            out.append(f'{len(hook.releases)} steps released, {steps} run')
        for r in hook.releases:
            public = (r.divisor, r.noise_std, r.sample_rate)
            plan = (base.plan['expected_batch_size'],
                    base.plan['noise_multiplier'] *
                    base.plan['max_grad_norm'], base.plan['sample_rate'])
            if public != plan:
                out.append(f'step {r.step}: divisor, sigma C, q = {public}, '
                           f'the plan says {plan}')
        if [r.step for r in hook.releases] != list(range(steps)):
            out.append('the ledger did not count one step per release')
        if hook.plan['engine'] != base.plan['engine']:
            out.append(f"engine {hook.plan['engine']} instead of "
                       f"{base.plan['engine']}")
    return out


def summary_line(report: Dict) -> str:
    line = (f"{'PASS' if report['passed'] else 'FAIL'}: engine "
            f"{report['engine']}, unit {report['unit']}: worst release "
            f"difference {report['worst_remove_ratio']:.4f} C with one unit "
            f"removed (<= 1), {report['worst_replace_ratio']:.4f} C with it "
            f"replaced (<= 2), over {report['steps']} steps "
            f"({report['steps_with_unit']} with the unit, "
            f"{report['removed_unit_records']} records)")
    if 'noise' in report:
        line += (f"; noise std {report['noise']['std_ratio']:.4f} sigma C "
                 f"over {report['noise']['coordinates']} coordinates")
    if report['failures']:
        line += '; ' + '; '.join(report['failures'])
    return line

