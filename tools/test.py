"""Evaluate a checkpoint (e.g. MPII PCKh); same command line as MMPose's
``tools/test.py``. DP checkpoints load like any other: the privacy ledger is
an extra checkpoint entry and the model's state-dict keys are MMPose's. A DP
config is built by ``DPRunner``, so the model is evaluated as it was trained
(BatchNorm frozen or replaced by GroupNorm, as the checkpoint's plan says);
its ``PrivacyHook`` does nothing outside training."""
import argparse
import json
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.hooks import Hook
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

# Importing mmpose_dp registers the checkpoint loader for torch >= 2.6.
from mmpose_dp.engine import setup_cpu_distributed


def parse_args():
    parser = argparse.ArgumentParser(description='Evaluate a pose model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir',
                        help='the directory to save evaluation results')
    parser.add_argument('--out', help='save the metrics to this JSON file')
    parser.add_argument('--dump', type=str,
                        help='dump predictions to a pickle file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings')
    parser.add_argument('--launcher',
                        choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def merge_args(cfg: Config, args) -> Config:
    cfg.launcher = args.launcher
    cfg.load_from = args.checkpoint
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    if args.dump is not None:
        if not args.dump.endswith(('.pkl', '.pickle')):
            raise SystemExit('--dump must name a .pkl file')
        dump = dict(type='DumpResults', out_file_path=args.dump)
        evaluators = cfg.test_evaluator
        cfg.test_evaluator = (list(evaluators) if isinstance(
            evaluators, (list, tuple)) else [evaluators]) + [dump]
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


class SaveMetrics(Hook):

    def __init__(self, path):
        self.path = path

    def after_test_epoch(self, runner, metrics=None):
        if metrics is not None:
            with open(self.path, 'w') as f:
                json.dump({k: float(v) for k, v in metrics.items()}, f,
                          indent=2)


def main():
    args = parse_args()
    cfg = merge_args(Config.fromfile(args.config), args)
    setup_cpu_distributed(cfg, args.launcher)  # no-op with a GPU
    if 'runner_type' in cfg:
        runner = RUNNERS.build(cfg)
    else:
        runner = Runner.from_cfg(cfg)
    if args.out:
        runner.register_hook(SaveMetrics(args.out), 'LOWEST')
    runner.test()


if __name__ == '__main__':
    main()
