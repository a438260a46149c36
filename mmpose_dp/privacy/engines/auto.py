"""``'auto'``: the fastest engine that is exact for the model."""
from typing import List, Sequence

from ..errors import NotPrivateError
from .base import ClippingEngine


class AutoEngine(ClippingEngine):
    """Tries its candidates, fastest first, on the first micro-batch and
    keeps the first that is exact for the model: each candidate is checked
    against per-sample autograd on a probe batch before it sees private
    data (:mod:`.verification`), and one that refuses (folded batch
    dimensions, an unsupported or tied layer, a forward it changes, a
    mismatch with the reference) or fails in any other way is dropped for
    the next. Nothing of a dropped attempt is kept. The choice and the
    reasons are in :attr:`report` (and the training log); they depend on
    the model and the probe, never on private values.

    Args:
        candidates: engine factories ``(model, batch_loss, loss_reduction)
            -> ClippingEngine``, fastest first; the last should be exact for
            every model (``vmap``).
    """

    name = 'auto'

    def __init__(self, model, batch_loss, loss_reduction,
                 candidates: Sequence):
        super().__init__(model, batch_loss, loss_reduction)
        self.candidates = list(candidates)
        self.chosen: ClippingEngine = None
        self.report: List[str] = []

    @property
    def busy(self) -> bool:
        return self.chosen is not None and self.chosen.busy

    def clipped_sum(self, batch, units, max_grad_norm, padded=0):
        if self.chosen is not None:
            return self.chosen.clipped_sum(batch, units, max_grad_norm,
                                           padded)
        for i, factory in enumerate(self.candidates):
            try:
                engine = factory(self.model, self.batch_loss,
                                 self.loss_reduction)
                result = engine.clipped_sum(batch, units, max_grad_norm,
                                            padded)
            except Exception as err:  # noqa: BLE001 (any failure: next)
                kind = '' if isinstance(err, NotPrivateError) else \
                    f'{type(err).__name__}: '
                self.report.append(f'{factory.name}: {kind}{err}')
                for p in self.params:
                    p.grad = None
                if i == len(self.candidates) - 1:
                    raise NotPrivateError(
                        "privacy.engine='auto': no clipping engine is exact "
                        'for this model; ' + ' | '.join(self.report)
                    ) from err
                continue
            self.chosen = engine
            self.report.append(
                f'chose {engine.name} (matches per-sample autograd to '
                f'{engine.verification_error:.1e} relative on the probe)')
            return result
        raise NotPrivateError('no clipping engine candidates')
