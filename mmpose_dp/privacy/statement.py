"""What a run protects and what it treats as public, in words.

The same text goes to the start and final log lines, the privacy plan in
every checkpoint and ``tools/privacy_calculator.py --checkpoint``, so a
reader of any of them learns what the epsilon is about.
"""
from typing import Dict, Optional

UNIT_WORDS = {
    'image': 'one image with all its annotated people',
    'instance': 'one annotated person instance (an image with k people '
    'holds k units; group privacy gives about k * epsilon for it)',
}


def privacy_statement(unit: str,
                      public_features: Optional[str] = None,
                      public_set: Optional[Dict] = None,
                      labels_public: bool = False) -> Dict[str, str]:
    """``dict(privacy_unit=..., protected=..., public=...)`` for a run.

    Args:
        unit: ``'image'`` or ``'instance'``.
        public_features: description of the public feature (e.g. the blur)
            if feature DP is on.
        public_set: ``dict(images=..., records=...)`` of a public set
            (projection), if any.
        labels_public: the keypoint labels, visibility and boxes of the
            private records are treated as public (feature DP, or a resumed
            run that once used it).
    """
    public = []
    if public_features or labels_public:
        protected = ('only the image detail that the public feature '
                     f'({public_features or "of an earlier segment"}) '
                     'removes')
        public.append(
            'the public feature of every training crop and every training '
            "record's keypoint labels, visibility and box (they enter an "
            'un-noised gradient)')
    else:
        protected = ('every training record: its image and its keypoint '
                     'labels, visibility and box')
    if public_set:
        public.append(
            f"the public set ({public_set['images']} whole images, "
            f"{public_set['records']} records), used without noise")
    return dict(privacy_unit=UNIT_WORDS[unit], protected=protected,
                public='; '.join(public) or 'nothing')


def statement_line(statement: Dict[str, str]) -> str:
    """One log line."""
    return (f"privacy unit: {statement['privacy_unit']}; protected: "
            f"{statement['protected']}; public: {statement['public']}")
