"""DP math in plain torch and prv-accountant; no MMEngine import here."""
from .accounting import (calibrate_noise_multiplier, epsilon_prv, epsilon_rdp,
                         merge_segments, PRVEpsilon, Segment)
from .clipping import clip_and_sum, clip_factors, clipped_sum, per_sample_norms
from .ledger import EpsilonTracker, PrivacyLedger
from .noise import add_gaussian_noise, make_generator
from .projection import PublicSubspace, flatten, unflatten
from .per_sample import (PerSampleGradients, disable_inplace_activations,
                         out_of_place_adds, trainable_parameters)

__all__ = [
    'calibrate_noise_multiplier', 'epsilon_prv', 'epsilon_rdp',
    'merge_segments', 'PRVEpsilon', 'Segment', 'clip_and_sum', 'clip_factors',
    'clipped_sum', 'per_sample_norms', 'EpsilonTracker', 'PrivacyLedger',
    'add_gaussian_noise', 'make_generator', 'PerSampleGradients',
    'PublicSubspace', 'flatten', 'unflatten', 'disable_inplace_activations', 'out_of_place_adds', 'trainable_parameters'
]
