"""DP math in plain torch and prv-accountant; no MMEngine import here."""
from .accounting import (epsilon_prv, epsilon_rdp, merge_segments, PRVEpsilon,
                         Segment)
from .calibration import calibrate_noise_multiplier
from .budget import NoisePlan, plan_noise, steps_within_budget
from .clipping import (clip_and_sum, clip_factors, clipped_sum,
                       per_sample_norms, sum_per_unit)
from .errors import NotPrivateError
from .ledger import EpsilonTracker, PrivacyLedger
from .noise import NoiseStream, add_gaussian_noise, make_generator
from .projection import PublicSubspace, flatten, unflatten
from .plan import PrivacyPlan
from .per_sample import (PerSampleGradients, disable_inplace_activations,
                         out_of_place_adds, trainable_parameters)
from .seeds import derived_seed, secret_seed
from .statement import privacy_statement, statement_line

__all__ = [
    'calibrate_noise_multiplier', 'epsilon_prv', 'epsilon_rdp',
    'merge_segments', 'PRVEpsilon', 'Segment', 'NoisePlan', 'plan_noise',
    'steps_within_budget', 'clip_and_sum', 'clip_factors', 'clipped_sum',
    'per_sample_norms', 'sum_per_unit', 'NotPrivateError', 'EpsilonTracker',
    'PrivacyLedger', 'NoiseStream', 'add_gaussian_noise', 'make_generator',
    'PublicSubspace', 'flatten', 'unflatten', 'PerSampleGradients',
    'disable_inplace_activations', 'out_of_place_adds',
    'trainable_parameters', 'derived_seed', 'secret_seed',
    'privacy_statement', 'statement_line', 'PrivacyPlan'
]
