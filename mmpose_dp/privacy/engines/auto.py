"""``'auto'``: the fastest engine that is exact for the model."""
from typing import List, Sequence

from ..errors import NotPrivateError
from .base import ClippingEngine


class AutoEngine(ClippingEngine):
    """Tries its candidates, fastest first, on the first micro-batch and
    keeps the first that is exact for the model; an engine that cannot be
    (folded batch dimensions, a parameter its hooks cannot reach, a forward
    it changes) refuses with :class:`NotPrivateError`, and the next one is
    tried. Nothing of a refused attempt is kept. The choice and the reasons
    are in :attr:`report` (and the training log).

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

    def clipped_sum(self, batch, units, max_grad_norm):
        if self.chosen is not None:
            return self.chosen.clipped_sum(batch, units, max_grad_norm)
        for i, factory in enumerate(self.candidates):
            try:
                engine = factory(self.model, self.batch_loss,
                                 self.loss_reduction)
                result = engine.clipped_sum(batch, units, max_grad_norm)
            except NotPrivateError as err:
                if i == len(self.candidates) - 1:
                    raise
                self.report.append(f'{factory.name}: {err}')
                for p in self.params:
                    p.grad = None
                continue
            self.chosen = engine
            self.report.append(f'chose {engine.name}')
            return result
        raise NotPrivateError('no clipping engine candidates')
