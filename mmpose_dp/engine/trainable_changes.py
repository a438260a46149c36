"""Whether the trainable parameters changed since an engine was built, and
what a DP step does about it."""
from typing import Optional

from mmengine.logging import print_log

from ..privacy import NotPrivateError


def trainable_change(engine) -> Optional[str]:
    """How the model's trainable parameters differ from those ``engine``
    clips (in words), or None."""
    now = [n for n, p in engine.model.named_parameters() if p.requires_grad]
    if now == engine.names:
        return None
    added = sorted(set(now) - set(engine.names))
    removed = sorted(set(engine.names) - set(now))
    return (f'{len(added)} parameter(s) became trainable {added[:5]}' +
            ('...' if len(added) > 5 else '') +
            f', {len(removed)} frozen {removed[:5]}' +
            ('...' if len(removed) > 5 else ''))


def follow_trainable_changes(wrapper, at_step_start: bool) -> None:
    """A :class:`DPOptimWrapper` applies only its engine's gradients, so
    the engine must know every trainable parameter: a parameter unfrozen
    (or frozen) since the engine was built, e.g. by a hook doing gradual
    unfreezing, rebuilds it at the start of a step (the new parameters are
    clipped and noised from then on, the engine is checked again); within
    a step it is refused."""
    change = trainable_change(wrapper.engine)
    if change is None:
        return
    if not at_step_start:
        raise NotPrivateError(
            f'the trainable parameters changed within a DP step ({change})'
            ': their gradients would not be clipped and noised with the '
            "step's. Change requires_grad only between steps (e.g. in "
            'before_train_epoch or before_train_iter)')
    print_log(f'[privacy] {change}: the clipping engine is rebuilt, so '
              'from this step on every trainable parameter is clipped '
              'and noised (and no other gets a gradient)',
              logger='current', level=30)
    engine = wrapper.engine
    wrapper.attach(engine.model, engine.loss_reduction, engine.batch_loss)
    for stage in wrapper.stages:
        if hasattr(stage, 'reset'):
            stage.reset()
