"""The privacy plan of a run: what its guarantee is about, typed.

Written into every checkpoint (as :meth:`PrivacyPlan.to_dict`, plain data
that loads without mmpose_dp) next to the ledger, read back on resume (the
same unit, BatchNorm mode and public set are required), by ``auto``
BatchNorm resolution, by the export and its privacy card. A plan of
another version is refused rather than guessed at.
"""
import dataclasses
from typing import ClassVar, Dict, Optional

from .errors import NotPrivateError


@dataclasses.dataclass(frozen=True)
class PrivacyPlan:
    """One run's plan; see :meth:`PrivacyHook.before_train`."""

    VERSION: ClassVar[int] = 3

    unit: str  #: 'image' or 'instance'
    n_private: int  #: N_private, in units
    private_data: Optional[str]  #: fingerprint of the private units
    target_epsilon: Optional[float]
    delta: float
    sample_rate: float  #: q
    total_steps: int  #: steps taken + planned
    noise_multiplier: float  #: sigma
    sigma_source: str  #: 'calibrated' or 'config'
    max_grad_norm: float  #: C
    method: str  #: 'DP-SGD' + its stages
    labels_public: bool  #: the pose labels are public (FDP, hybrid)
    privacy_unit: str  #: the statement: the unit in words
    protected: str  #: ... what is protected
    public: str  #: ... what is public
    engine: Optional[str] = None  #: the clipping engine used
    batch_norm: Optional[Dict] = None  #: what was done to BatchNorm
    trainable: Optional[Dict] = None  #: privacy.trainable's counts
    public_set: Optional[Dict] = None  #: id, images, records
    mechanism: Optional[Dict] = None  #: its config; None: DP-SGD's

    def to_dict(self) -> Dict:
        return dict(dataclasses.asdict(self), version=self.VERSION)

    @classmethod
    def from_dict(cls, state: Dict) -> 'PrivacyPlan':
        """The plan a checkpoint stores; another version is refused."""
        version = (state or {}).get('version')
        if version != cls.VERSION:
            raise NotPrivateError(
                f"the checkpoint's privacy plan has version {version}, this "
                f'mmpose_dp reads version {cls.VERSION}; use the mmpose_dp '
                'version that wrote it')
        names = {f.name for f in dataclasses.fields(cls)}
        missing = {f.name for f in dataclasses.fields(cls)
                   if f.default is dataclasses.MISSING} - set(state)
        if missing:
            raise NotPrivateError(
                f"the checkpoint's privacy plan lacks {sorted(missing)}")
        return cls(**{k: v for k, v in state.items() if k in names})

    def replace(self, **changes) -> 'PrivacyPlan':
        return dataclasses.replace(self, **changes)

    @property
    def batch_norm_mode(self) -> Optional[str]:
        return (self.batch_norm or {}).get('mode')

    @property
    def public_set_id(self) -> Optional[str]:
        return (self.public_set or {}).get('id')

    @property
    def statement(self) -> Dict:
        """``privacy_unit``, ``protected``, ``public`` (statement_line)."""
        return dict(privacy_unit=self.privacy_unit, protected=self.protected,
                    public=self.public)

    def check_continued_by(self, unit: str, batch_norm_mode: Optional[str],
                           public_set_id: Optional[str]) -> None:
        """A run resuming this plan's ledger keeps its meaning: the same
        privacy unit, BatchNorm mode and public set."""
        if self.unit != unit:
            raise NotPrivateError(
                f"the checkpoint's ledger counts privacy unit "
                f'{self.unit!r}, this run {unit!r}; resume with '
                f'privacy.unit={self.unit!r}')
        if self.batch_norm_mode != batch_norm_mode:
            raise NotPrivateError(
                f'the resumed run converted BatchNorm with mode '
                f'{self.batch_norm_mode!r}, this run with '
                f'{batch_norm_mode!r}; set '
                f'privacy.batch_norm.mode={self.batch_norm_mode!r}')
        if self.public_set_id != public_set_id:
            raise NotPrivateError(
                f'the resumed run used public set {self.public_set_id}, this '
                f'run {public_set_id}: records private so far would become '
                'public (or the reverse). Resume with the same '
                'privacy.public_data')
