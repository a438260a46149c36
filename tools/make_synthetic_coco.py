"""Write a generated data set in COCO keypoint layout (tests, demos).

The images are those of ``make_synthetic_mpii.py`` (stick figures with a
head and eyes, one or several people per image side by side, overlapping);
each person is annotated with the 17 COCO keypoints: the limbs' joints, and
nose, eyes and ears placed on the drawn head. Records carry ``bbox``
(xywh), ``area``, ``num_keypoints``, ``iscrowd = 0``; a detector-box file
for the val split holds every person's box, slightly perturbed, with a
score (top-down evaluation with detected boxes, as COCO's
``person_detection_results``).

Layout (as MMPose's CocoDataset reads it)::

    OUT/images/000000000001.jpg ...
    OUT/annotations/person_keypoints_train.json
    OUT/annotations/person_keypoints_val.json
    OUT/person_detection_results/val_detections.json

Usage: python tools/make_synthetic_coco.py OUT --num-train N --num-val M
       [--seed S] [--size W H] [--style {default,shifted}]
       [--people-per-image {K,LO-HI}]
"""
import argparse
import json
import os
import os.path as osp
from typing import Dict, List, Tuple, Union

import cv2
import numpy as np

from make_synthetic_mpii import (HEAD_TOP, L_ANKLE, L_ELBOW, L_HIP, L_KNEE,
                                 L_SHOULDER, L_WRIST, R_ANKLE, R_ELBOW, R_HIP,
                                 R_KNEE, R_SHOULDER, R_WRIST, UPPER_NECK,
                                 _people_per_image_arg,
                                 parse_people_per_image, render_group)

#: COCO keypoints 5-16 from the MPII joints (left/right are the person's).
LIMB_JOINTS = [L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW, L_WRIST, R_WRIST,
               L_HIP, R_HIP, L_KNEE, R_KNEE, L_ANKLE, R_ANKLE]
KEYPOINT_NAMES = [
    'nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear',
    'left_shoulder', 'right_shoulder', 'left_elbow', 'right_elbow',
    'left_wrist', 'right_wrist', 'left_hip', 'right_hip', 'left_knee',
    'right_knee', 'left_ankle', 'right_ankle'
]
SKELETON = [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12],
            [7, 13], [6, 7], [6, 8], [7, 9], [8, 10], [9, 11], [2, 3],
            [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7]]


def coco_keypoints(joints: np.ndarray) -> np.ndarray:
    """The 17 COCO keypoints (0-based pixels) of a drawn MPII figure: the
    face points where ``_draw_person`` draws the head and eyes (front
    view: the person's right eye is on the image's left)."""
    centre = (joints[UPPER_NECK] + joints[HEAD_TOP]) / 2
    radius = np.linalg.norm(joints[HEAD_TOP] - joints[UPPER_NECK]) / 2
    axis = (joints[HEAD_TOP] - joints[UPPER_NECK]) / (2 * radius + 1e-6)
    across = np.array([-axis[1], axis[0]])  # towards the image's right
    eye = centre + 0.25 * radius * axis
    face = [centre - 0.15 * radius * axis,          # nose
            eye + 0.4 * radius * across,            # left eye
            eye - 0.4 * radius * across,            # right eye
            centre + 0.9 * radius * across,         # left ear
            centre - 0.9 * radius * across]         # right ear
    return np.concatenate([np.stack(face), joints[LIMB_JOINTS]])


def _annotation(ann_id: int, image_id: int, keypoints: np.ndarray,
                size: Tuple[int, int]) -> Dict:
    w, h = size
    inside = ((keypoints >= 0) & (keypoints < [w, h])).all(1)
    lo, hi = keypoints.min(0), keypoints.max(0)
    pad = 0.1 * (hi - lo)  # COCO boxes enclose the body, not the joints
    x1, y1 = np.maximum(lo - pad, 0)
    x2, y2 = np.minimum(hi + pad, [w - 1, h - 1])
    flat = np.concatenate([keypoints.round(2),
                           np.where(inside, 2, 0)[:, None]], 1)
    flat[~inside, :2] = 0
    return dict(id=ann_id, image_id=image_id, category_id=1, iscrowd=0,
                keypoints=flat.reshape(-1).tolist(),
                num_keypoints=int(inside.sum()),
                bbox=[float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                area=float((x2 - x1) * (y2 - y1) * 0.6))


def write_split(out: str, split: str, n: int, first_id: int,
                rng: np.random.Generator, size, style,
                people: Tuple[int, int]) -> Dict:
    """Write ``n`` images and their COCO annotation file; returns it."""
    images, annotations = [], []
    for i in range(n):
        count = people[0] if people[0] == people[1] else \
            int(rng.integers(people[0], people[1] + 1))
        img, joints, _ = render_group(rng, size, style, count)
        image_id = first_id + i
        name = f'{image_id:012d}.jpg'
        cv2.imwrite(osp.join(out, 'images', name), img,
                    [cv2.IMWRITE_JPEG_QUALITY, 92])
        images.append(dict(id=image_id, file_name=name, width=size[0],
                           height=size[1]))
        for person in joints:
            annotations.append(_annotation(
                len(annotations) + first_id * 100, image_id,
                coco_keypoints(person), size))
    data = dict(images=images, annotations=annotations,
                categories=[dict(id=1, name='person',
                                 supercategory='person',
                                 keypoints=KEYPOINT_NAMES,
                                 skeleton=SKELETON)])
    with open(osp.join(out, 'annotations',
                       f'person_keypoints_{split}.json'), 'w') as f:
        json.dump(data, f)
    return data


def detections(data: Dict, rng: np.random.Generator) -> List[Dict]:
    """A detector's boxes for every annotated person (jittered by up to 5%
    of the box, scores in [0.8, 1])."""
    out = []
    for ann in data['annotations']:
        x, y, w, h = ann['bbox']
        jitter = rng.uniform(-0.05, 0.05, 4) * [w, h, w, h]
        out.append(dict(image_id=ann['image_id'], category_id=1,
                        bbox=[float(v) for v in
                              np.array([x, y, w, h]) + jitter],
                        score=float(rng.uniform(0.8, 1.0))))
    return out


def make_synthetic_coco(out: str, num_train: int, num_val: int,
                        seed: int = 0, size=(192, 256),
                        style: str = 'default',
                        people_per_image: Union[int, str] = '1-3') -> Dict:
    """Write the data set; returns its summary (images and records per
    split)."""
    people = parse_people_per_image(people_per_image)
    for folder in ('images', 'annotations', 'person_detection_results'):
        os.makedirs(osp.join(out, folder), exist_ok=True)
    rng = np.random.default_rng(seed)
    train = write_split(out, 'train', num_train, 1, rng, size, style, people)
    val = write_split(out, 'val', num_val, num_train + 1, rng, size, style,
                      people)
    with open(osp.join(out, 'person_detection_results',
                       'val_detections.json'), 'w') as f:
        json.dump(detections(val, rng), f)
    return dict(out=out, seed=seed, size=list(size), style=style,
                train=dict(images=num_train,
                           records=len(train['annotations'])),
                val=dict(images=num_val, records=len(val['annotations'])))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('out', help='output folder (COCO layout)')
    parser.add_argument('--num-train', type=int, default=256)
    parser.add_argument('--num-val', type=int, default=64)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--size', type=int, nargs=2, default=(192, 256),
                        metavar=('W', 'H'))
    parser.add_argument('--style', choices=('default', 'shifted'),
                        default='default')
    parser.add_argument('--people-per-image', default='1-3',
                        type=_people_per_image_arg, metavar='{K,LO-HI}')
    args = parser.parse_args()
    print(json.dumps(make_synthetic_coco(
        args.out, args.num_train, args.num_val, args.seed, tuple(args.size),
        args.style, args.people_per_image)))


if __name__ == '__main__':
    main()
