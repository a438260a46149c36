"""Build the post-processing stages and their public data from the
``privacy`` section: the projection (PDP) with its public set, the
public-feature gradient (FDP) with its loader; both make the hybrid."""
import copy
from typing import Dict, List, Optional, Tuple

from mmengine.registry import DATASETS
from torch.utils.data import Subset

from ..datasets import check_disjoint, public_set_id, record_image_keys
from ..models import NotPrivateError
from .stages import ProjectionStage, PublicFeatureStage


def check_public_options(projection: Optional[Dict],
                         public_data: Optional[Dict],
                         public_features: Optional[Dict]) -> Optional[Dict]:
    """Refuse inconsistent ``privacy.projection`` / ``public_data`` /
    ``public_features``; returns ``public_features`` without its
    ``labels_are_public`` declaration, which it requires."""
    if projection is not None and not public_data:
        raise ValueError(
            'privacy.projection needs public data: set privacy.public_data'
            '=dict(num_samples=100, seed=0) or dict(dataset=dict(...))')
    if public_data and not (bool(public_data.get('num_samples'))
                            ^ ('dataset' in public_data)):
        raise ValueError('privacy.public_data takes num_samples (and '
                         'seed) or dataset, not both')
    if public_features is None:
        return None
    public_features = dict(public_features)
    if public_features.pop('labels_are_public', None) is not True:
        raise NotPrivateError(
            'privacy.public_features (feature DP) computes an un-noised loss '
            'on every training record: its blurred crop AND its keypoint '
            'labels, visibility and box. The epsilon then protects only the '
            'image detail that the blur removes, not the pose. If that is '
            'your threat model, say so with privacy.public_features.'
            'labels_are_public=True; otherwise use DP-SGD or PDP')
    return public_features


def public_dataset(public_data: Dict, private, sampler) -> Tuple[object,
                                                                 List[str]]:
    """The public records and the image of each: whole images carved out
    of the training set (``num_samples``), or a separate data set that
    shares no image with the private one (``dataset``)."""
    if public_data.get('num_samples'):
        keys = record_image_keys(private)
        indices = sampler.public_indices
        return Subset(private, indices), [keys[i] for i in indices]
    dataset = DATASETS.build(copy.deepcopy(public_data['dataset']))
    check_disjoint(dataset, private)
    return dataset, record_image_keys(dataset)


def build_public_feature_loader(train_loader_cfg: Dict,
                                transform: Optional[Dict] = None,
                                batch_size: Optional[int] = None,
                                seed: Optional[int] = None):
    """A loader of public features of the training records, independent of
    the private Poisson sampler: its own shuffling sampler (its seed is
    ``seed``, or the run's public seed: which public features a step uses
    needs no secret) and the training pipeline with ``transform`` inserted
    right after ``TopdownAffine``."""
    from mmengine.runner import Runner
    cfg = copy.deepcopy(train_loader_cfg)
    cfg.pop('batch_sampler', None)
    cfg['collate_fn'] = dict(type='pseudo_collate')
    cfg['batch_size'] = batch_size or cfg.get('batch_size')
    cfg['sampler'] = dict(type='DefaultSampler', shuffle=True)
    if seed is not None:
        cfg['sampler']['seed'] = seed
    # A ConcatDataset (several sources) has a pipeline per source.
    datasets = cfg['dataset'].get('datasets') or [cfg['dataset']]
    for dataset in datasets:
        pipeline = list(dataset['pipeline'])
        types = [t.get('type') for t in pipeline]
        if 'TopdownAffine' not in types:
            raise ValueError('privacy.public_features needs a TopdownAffine '
                             'step in the training pipeline')
        at = types.index('TopdownAffine') + 1
        pipeline.insert(at, transform or dict(type='PublicFeatureBlur'))
        dataset['pipeline'] = pipeline
    return Runner.build_dataloader(cfg, seed=None)


def build_stages(model, train_loader_cfg: Dict, private, sampler,
                 public_data: Optional[Dict], projection: Optional[Dict],
                 public_features: Optional[Dict]
                 ) -> Tuple[Optional[Dict], list]:
    """``(public set identity or None, stages)`` for the run."""
    stages, public_set = [], None
    if public_data:
        dataset, keys = public_dataset(public_data, private, sampler)
        public_set = dict(id=public_set_id(keys), images=len(set(keys)),
                          records=len(dataset))
        if projection is not None:
            stages.append(ProjectionStage(model, dataset, **projection))
    if public_features is not None:
        cfg = dict(public_features)
        loader = build_public_feature_loader(
            train_loader_cfg, cfg.pop('transform', None),
            cfg.pop('batch_size', None), cfg.pop('seed', None))
        stages.append(PublicFeatureStage(model, loader, **cfg))
    return public_set, stages


def public_feature_words(public_features: Optional[Dict]) -> Optional[str]:
    """``'PublicFeatureBlur(kernel_size=25, sigma=10)'``, for the log."""
    if public_features is None:
        return None
    transform = public_features.get('transform') or dict(
        type='PublicFeatureBlur')
    args = ', '.join(f'{k}={v}' for k, v in transform.items() if k != 'type')
    return f"{transform['type']}({args})"
