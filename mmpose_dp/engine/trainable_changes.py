"""Whether the trainable parameters changed since an engine was built."""
from typing import Optional


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
