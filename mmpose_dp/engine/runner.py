"""``runner_type='DPRunner'``: turn a ``privacy`` config section into the DP
components of a stock MMPose config.

mmengine forbids two ``_base_`` files defining the same key, so a mixin cannot
override ``optim_wrapper`` or ``train_dataloader`` of an MMPose base config.
The mixin instead adds two new keys, ``privacy`` and ``runner_type``, and
:func:`apply_privacy` rewrites the config before the Runner is built; the
rewritten config is what the work dir's dumped config shows.
"""
import copy
import logging

from mmengine.config import Config, ConfigDict
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner
from mmengine.visualization import Visualizer

from ..datasets import check_unit
from .atomic_checkpoints import ATOMIC_BACKEND
from .model_preparation import prepare_private_model
from .privacy_session import HOOKS_KEYS

#: privacy keys -> the component that takes them.
HOOK_KEYS = sum(HOOKS_KEYS.values(), ())
OPTIM_KEYS = ('max_grad_norm', 'noise_seed', 'engine')
LOOP_KEYS = ('max_physical_batch_size', 'log_private_metrics',
             'physical_batch_size', 'cuda_graphs')
SAMPLER_KEYS = ('sampler_seed', 'unit')
#: Applied by DPRunner itself to the built model.
MODEL_KEYS = ('batch_norm', 'trainable')
#: AmpOptimWrapper's own arguments (dropped: DP steps run in fp32).
AMP_KEYS = ('loss_scale', 'dtype', 'use_fsdp')
#: The privacy unit when the config names none (see README).
DEFAULT_UNIT = 'image'
KNOWN_KEYS = set(HOOK_KEYS + OPTIM_KEYS + LOOP_KEYS + SAMPLER_KEYS +
                 MODEL_KEYS)


def apply_privacy(cfg: Config) -> Config:
    """Return a copy of ``cfg`` with DP-SGD components from ``cfg.privacy``.

    Sets ``optim_wrapper.type='DPOptimWrapper'`` (keeping the optimizer),
    ``train_dataloader.batch_sampler='PoissonBatchSampler'`` with the
    empty-safe collate, ``train_cfg.type='DPEpochBasedTrainLoop'`` and adds
    the privacy hooks of :data:`HOOKS_KEYS` to ``custom_hooks``. Components the config already names
    are kept; settings that would break the guarantee are refused.
    """
    cfg = copy.deepcopy(cfg)
    privacy = dict(cfg.get('privacy') or {})
    unknown = set(privacy) - KNOWN_KEYS
    if unknown:
        raise ValueError(f'unknown privacy keys {sorted(unknown)}; known: '
                         f'{sorted(KNOWN_KEYS)}')
    if 'max_grad_norm' not in privacy:
        raise ValueError('privacy.max_grad_norm (the clipping norm C) is '
                         'required')

    ow = cfg.optim_wrapper
    if ow.get('type') == 'AmpOptimWrapper':
        # Mixed precision is a speed setting of the same model (MMPose's
        # *_fp16 configs); its dynamic loss scale would multiply every
        # per-sample gradient before clipping. DP steps run in fp32.
        print_log(
            "[privacy] optim_wrapper.type='AmpOptimWrapper': DP training "
            "runs in fp32 (DPOptimWrapper); the AMP settings "
            f"{ {k: ow[k] for k in AMP_KEYS if k in ow} } are dropped",
            logger='current', level=logging.WARNING)
        for key in AMP_KEYS:
            ow.pop(key, None)
        ow['type'] = 'OptimWrapper'
    if ow.get('type', 'OptimWrapper') not in ('OptimWrapper',
                                              'DPOptimWrapper'):
        raise ValueError(
            f"optim_wrapper.type={ow['type']!r} is not supported with DP; "
            'use the plain OptimWrapper (fp32)')
    ow['type'] = 'DPOptimWrapper'
    for key in OPTIM_KEYS:
        if key in privacy:
            ow[key] = privacy[key]

    loader = cfg.train_dataloader
    sampler_cfg = dict(type='PoissonBatchSampler',
                       unit=check_unit(privacy.get('unit', DEFAULT_UNIT)))
    if privacy.get('sampler_seed') is not None:
        sampler_cfg['seed'] = privacy['sampler_seed']
    public_data = privacy.get('public_data') or {}
    if public_data.get('num_samples'):
        # Carved out of the training annotations: never privately sampled.
        sampler_cfg['public_samples'] = public_data['num_samples']
        sampler_cfg['public_seed'] = public_data.get('seed', 0)
    given = loader.get('batch_sampler')
    if given is not None and given.get('type') != 'PoissonBatchSampler':
        raise ValueError('train_dataloader.batch_sampler must be '
                         "PoissonBatchSampler for DP training")
    # The privacy section decides (a dumped config names the sampler too).
    loader['batch_sampler'] = sampler_cfg
    collate = loader.get('collate_fn', dict(type='pseudo_collate'))
    if collate.get('type') not in ('pseudo_collate', 'dp_pseudo_collate'):
        raise ValueError(
            f"collate_fn {collate.get('type')!r} is not empty-batch safe; "
            "use dict(type='dp_pseudo_collate')")
    loader['collate_fn'] = dict(type='dp_pseudo_collate')
    loader.pop('drop_last', None)
    loader.pop('shuffle', None)

    train_cfg = cfg.train_cfg
    if train_cfg.get('type', 'DPEpochBasedTrainLoop') not in (
            'DPEpochBasedTrainLoop', 'EpochBasedTrainLoop'):
        raise ValueError('DP training is epoch based; train_cfg.type must be '
                         "'DPEpochBasedTrainLoop'")
    if not train_cfg.pop('by_epoch', True):
        raise ValueError('DP training is epoch based; set by_epoch=True')
    train_cfg['type'] = 'DPEpochBasedTrainLoop'
    for key in LOOP_KEYS:
        if key in privacy:
            train_cfg[key] = privacy[key]

    log_processor = cfg.get('log_processor') or ConfigDict()
    if log_processor.get('type', 'LogProcessor') not in ('LogProcessor',
                                                         'DPLogProcessor'):
        raise ValueError(
            f"log_processor.type={log_processor['type']!r}: DP training "
            "logs through 'DPLogProcessor' (no peak memory of private "
            'batches in the log)')
    log_processor['type'] = 'DPLogProcessor'
    cfg.log_processor = log_processor

    hooks = [h for h in cfg.get('custom_hooks') or []
             if h.get('type') not in HOOKS_KEYS]
    cfg.custom_hooks = hooks + [
        dict(type=name, **{k: privacy[k] for k in keys if k in privacy})
        for name, keys in HOOKS_KEYS.items()]
    imports = cfg.get('custom_imports') or ConfigDict(imports=[])
    if 'mmpose_dp' not in imports['imports']:
        imports['imports'] = list(imports['imports']) + ['mmpose_dp']
    cfg.custom_imports = imports
    return cfg


@RUNNERS.register_module()
class DPRunner(Runner):
    """A Runner built from a config with a ``privacy`` section.

    The built model is prepared for DP before anything else sees it
    (:func:`prepare_private_model`: BatchNorm frozen or replaced,
    ``privacy.trainable``); :attr:`private_model` says what was done.
    """

    @classmethod
    def from_cfg(cls, cfg: Config) -> 'Runner':
        return super().from_cfg(apply_privacy(cfg))

    def save_checkpoint(self, out_dir: str, filename: str,
                        file_client_args=None, save_optimizer: bool = True,
                        save_param_scheduler: bool = True, meta=None,
                        by_epoch: bool = True, backend_args=None):
        """MMEngine's, written atomically (write, fsync, rename) unless
        another storage backend is asked for."""
        if backend_args is None and file_client_args is None and \
                '://' not in str(out_dir):
            backend_args = dict(backend=ATOMIC_BACKEND)
        super().save_checkpoint(
            out_dir, filename, file_client_args=file_client_args,
            save_optimizer=save_optimizer,
            save_param_scheduler=save_param_scheduler, meta=meta,
            by_epoch=by_epoch, backend_args=backend_args)

    def build_visualizer(self, visualizer=None):
        """MMEngine's, but never an earlier run's visualizer: a visualizer
        is one instance per name for the whole process, so a second run in
        one process (a notebook, a search) with MMPose's fixed name
        ``'visualizer'`` would write its scalars into the first run's work
        dir. A name already taken gets the first free ``_<n>`` suffix after
        this run's experiment name (checked, not derived from an object id,
        which Python reuses)."""
        if isinstance(visualizer, dict) and visualizer.get('name') and \
                Visualizer.check_instance_created(visualizer['name']):
            stem = f"{visualizer['name']}_{self._experiment_name}"
            n = 1
            while Visualizer.check_instance_created(f'{stem}_{n}'):
                n += 1
            visualizer = dict(visualizer, name=f'{stem}_{n}')
        return super().build_visualizer(visualizer)

    def build_model(self, model):
        model = super().build_model(model)
        self.private_model = prepare_private_model(
            model, dict(self.cfg.get('privacy') or {}), self.cfg.get('model'),
            self._load_from, self._resume, self._work_dir)
        return model
