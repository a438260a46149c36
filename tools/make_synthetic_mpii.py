"""Write a generated data set in MPII layout (for tests, demos and studies).

Each image holds one front-facing stick figure (or, with
``people_per_image``, several) with a head (eyes mark the front, so the
person's right side is on the image's left, which horizontal flipping
preserves) and the 16 MPII joints. Poses, proportions, colours, position,
size and backgrounds vary, so a pose model has to learn.

Several people per image (the privacy unit "image" groups their records):
they are drawn smaller and stand side by side on a common ground line, each
joint box overlapping the next, so a top-down crop of one person shows parts
of its neighbours, as in crowded MPII images. Each person is one annotation
record; the records of an image share its file name.

Layout (as MMPose's MpiiDataset reads it)::

    OUT/images/000000001.jpg ...           numeric names (img_id = int(stem))
    OUT/annotations/mpii_train.json       [{image, center, scale, joints, joints_vis}]
    OUT/annotations/mpii_val.json         (one record per person)
    OUT/annotations/mpii_gt_val.mat       headboxes_src, shape (2, 2, N_val)
                                          (N_val = val records, in their order)

Coordinates are 1-based (MATLAB), as in MPII. ``--num-train``/``--num-val``
count images; with one person per image (the default) images and records
are the same, and the output is the one written before several people were
supported (same seed, same bytes).

Usage: python tools/make_synthetic_mpii.py OUT --num-train N --num-val M
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
from scipy.io import savemat

# MPII joint order.
R_ANKLE, R_KNEE, R_HIP, L_HIP, L_KNEE, L_ANKLE, PELVIS, THORAX, UPPER_NECK, \
    HEAD_TOP, R_WRIST, R_ELBOW, R_SHOULDER, L_SHOULDER, L_ELBOW, L_WRIST = \
    range(16)
LIMBS = [(R_ANKLE, R_KNEE), (R_KNEE, R_HIP), (L_HIP, L_KNEE),
         (L_KNEE, L_ANKLE), (R_HIP, L_HIP), (PELVIS, THORAX),
         (THORAX, UPPER_NECK), (R_WRIST, R_ELBOW), (R_ELBOW, R_SHOULDER),
         (R_SHOULDER, L_SHOULDER), (L_SHOULDER, L_ELBOW), (L_ELBOW, L_WRIST)]


def _rot(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def random_pose(rng: np.random.Generator, height: float,
                style: str) -> np.ndarray:
    """16 joints (x, y) of a person ``height`` pixels tall, pelvis at 0."""
    lean = rng.uniform(-0.35, 0.35)
    up = _rot(lean) @ np.array([0.0, -1.0])
    side = np.array([-up[1], up[0]])  # towards the image's right
    torso, neck, head = 0.30 * height, 0.06 * height, 0.13 * height
    upper_arm, fore_arm = 0.17 * height, 0.15 * height
    thigh, shin = 0.24 * height, 0.23 * height
    if style == 'shifted':  # other proportions: a shifted public domain
        torso, thigh, shin = 0.34 * height, 0.21 * height, 0.20 * height
    shoulder_w = rng.uniform(0.09, 0.13) * height
    hip_w = rng.uniform(0.06, 0.09) * height
    j = np.zeros((16, 2))
    j[PELVIS] = 0
    j[THORAX] = j[PELVIS] + torso * up
    j[UPPER_NECK] = j[THORAX] + neck * up
    j[HEAD_TOP] = j[UPPER_NECK] + head * (_rot(rng.uniform(-0.3, 0.3)) @ up)
    # Front view: the person's right is on the image's left.
    j[R_SHOULDER] = j[THORAX] - shoulder_w * side
    j[L_SHOULDER] = j[THORAX] + shoulder_w * side
    j[R_HIP] = j[PELVIS] - hip_w * side
    j[L_HIP] = j[PELVIS] + hip_w * side
    down = -up
    for sh, el, wr, sign in ((R_SHOULDER, R_ELBOW, R_WRIST, -1),
                             (L_SHOULDER, L_ELBOW, L_WRIST, 1)):
        a1 = sign * rng.uniform(-0.3, 2.6)
        a2 = a1 + sign * rng.uniform(-0.2, 2.0)
        j[el] = j[sh] + upper_arm * (_rot(-a1) @ down)
        j[wr] = j[el] + fore_arm * (_rot(-a2) @ down)
    for hp, kn, an, sign in ((R_HIP, R_KNEE, R_ANKLE, -1),
                             (L_HIP, L_KNEE, L_ANKLE, 1)):
        a1 = sign * rng.uniform(-0.2, 0.9)
        a2 = a1 - sign * rng.uniform(0.0, 1.2)
        j[kn] = j[hp] + thigh * (_rot(-a1) @ down)
        j[an] = j[kn] + shin * (_rot(-a2) @ down)
    return j


def parse_people_per_image(value: Union[int, str]) -> Tuple[int, int]:
    """``1``, ``'2'`` or ``'2-3'`` as the range (lo, hi) of people per image.

    Raises:
        ValueError: naming the option and the accepted forms.
    """
    try:
        if isinstance(value, (int, np.integer)):
            lo = hi = int(value)
        else:
            parts = str(value).split('-')
            if len(parts) not in (1, 2):
                raise ValueError
            lo, hi = int(parts[0]), int(parts[-1])
    except ValueError:
        lo, hi = 0, -1
    if not 1 <= lo <= hi:
        raise ValueError(
            f'people_per_image={value!r}: give a count K >= 1 (e.g. 1) or a '
            'range LO-HI with 1 <= LO <= HI (e.g. 2-3; each image draws its '
            'count uniformly in the range)')
    return lo, hi


def _background(rng: np.random.Generator, size: Tuple[int, int],
                style: str) -> Tuple[np.ndarray, np.ndarray]:
    """A noisy background with distractor blobs, and its base colour."""
    w, h = size
    base = rng.integers(0, 256, size=3)
    img = np.empty((h, w, 3), np.uint8)
    img[:] = base
    noise = rng.normal(0, 18, size=(h // 8 + 1, w // 8 + 1, 3))
    img = np.clip(img + cv2.resize(noise, (w, h)), 0, 255).astype(np.uint8)
    if style == 'shifted':  # public domain: darker, smoother backgrounds
        img = cv2.GaussianBlur(img, (0, 0), 3) // 2
    for _ in range(rng.integers(0, 4)):  # distractor blobs
        c = tuple(int(v) for v in rng.integers(0, 256, 3))
        centre = tuple(int(v) for v in rng.integers(0, [w, h]))
        cv2.circle(img, centre, int(rng.integers(2, max(3, w // 10))), c, -1)
    return img, base


def _draw_person(img: np.ndarray, rng: np.random.Generator,
                 joints: np.ndarray, height: float,
                 base: np.ndarray) -> np.ndarray:
    """Draw one figure on ``img``; returns its head box (x1, y1, x2, y2)."""
    thick = max(2, int(round(0.035 * height)))
    body = tuple(int(v) for v in (255 - base + rng.integers(-40, 40, 3)) % 256)
    for a, b in LIMBS:
        p, q = joints[a], joints[b]
        colour = body if (a, b) not in ((R_SHOULDER, L_SHOULDER),
                                        (R_HIP, L_HIP)) else \
            tuple(int(v) for v in (np.array(body) // 2 + 60))
        cv2.line(img, tuple(int(round(v)) for v in p),
                 tuple(int(round(v)) for v in q), colour, thick, cv2.LINE_AA)
    for k in (R_WRIST, L_WRIST, R_ANKLE, L_ANKLE):
        cv2.circle(img, tuple(int(round(v)) for v in joints[k]), thick, body,
                   -1, cv2.LINE_AA)
    # Head: a disc between upper neck and head top, with eyes (front view).
    centre = (joints[UPPER_NECK] + joints[HEAD_TOP]) / 2
    radius = np.linalg.norm(joints[HEAD_TOP] - joints[UPPER_NECK]) / 2
    cv2.circle(img, tuple(int(round(v)) for v in centre),
               max(2, int(round(radius))), body, -1, cv2.LINE_AA)
    axis = (joints[HEAD_TOP] - joints[UPPER_NECK]) / (2 * radius + 1e-6)
    across = np.array([-axis[1], axis[0]])
    eye_colour = tuple(int(v) for v in (255 - np.array(body)))
    for s in (-1, 1):
        eye = centre + 0.25 * radius * axis + s * 0.4 * radius * across
        cv2.circle(img, tuple(int(round(v)) for v in eye),
                   max(1, int(round(radius / 4))), eye_colour, -1)
    return np.concatenate([centre - radius, centre + radius])


def render(rng: np.random.Generator, size: Tuple[int, int],
           style: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image, its joints (0-based pixels) and head box (x1, y1, x2, y2)."""
    # The draws (and their order) fix the one-person data set of a seed,
    # which committed studies depend on: leave them as they are.
    w, h = size
    img, base = _background(rng, size, style)
    height = rng.uniform(0.55, 0.8) * h
    joints = random_pose(rng, height, style)
    lo, hi = joints.min(0), joints.max(0)
    margin = 0.06 * np.array([w, h])
    low = margin - lo
    high = np.array([w, h]) - margin - hi
    offset = rng.uniform(low, np.maximum(low, high))
    joints = joints + offset
    head_box = _draw_person(img, rng, joints, height, base)
    return img, joints, head_box


def _stand_side_by_side(rng: np.random.Generator, poses: List[np.ndarray],
                        heights: np.ndarray,
                        size: Tuple[int, int]) -> Tuple[List[np.ndarray],
                                                         np.ndarray]:
    """Place poses (pelvis at 0) left to right; returns joints and heights.

    Neighbouring joint boxes overlap by 3-15% of a person's height (at most
    30% of the narrower box), so the square MPII box of each person (side =
    its larger extent, centred on its joint box) holds part of a
    neighbour. The row shrinks as a whole where it would not fit.
    """
    w, h = size
    margin = 0.06 * np.array([w, h])
    lo = np.array([p.min(0) for p in poses])
    hi = np.array([p.max(0) for p in poses])
    widths = hi[:, 0] - lo[:, 0]
    narrower = np.minimum(widths[:-1], widths[1:])
    overlaps = np.minimum(
        rng.uniform(0.03, 0.15, len(poses) - 1) * heights[1:], 0.3 * narrower)
    row = widths.sum() - overlaps.sum()
    tallest = (hi[:, 1] - lo[:, 1]).max()
    shrink = min(1.0, (w - 2 * margin[0]) / row,
                 (h - 2 * margin[1]) / tallest)
    poses = [p * shrink for p in poses]
    lo, hi, widths = lo * shrink, hi * shrink, widths * shrink
    overlaps, row, tallest = overlaps * shrink, row * shrink, tallest * shrink
    heights = heights * shrink
    left = rng.uniform(margin[0], max(margin[0], w - margin[0] - row))
    lefts = left + np.concatenate([[0], np.cumsum(widths[:-1] - overlaps)])
    # Feet near one ground line, so neighbours also overlap vertically.
    ground = rng.uniform(margin[1] + tallest, max(margin[1] + tallest,
                                                  h - margin[1]))
    placed = []
    for pose, x, lo_i, hi_i, height in zip(poses, lefts, lo, hi, heights):
        dy = ground - hi_i[1] + rng.uniform(-0.05, 0.05) * height
        dy = np.clip(dy, margin[1] - lo_i[1], h - margin[1] - hi_i[1])
        placed.append(pose + np.array([x - lo_i[0], dy]))
    return placed, heights


def render_group(rng: np.random.Generator, size: Tuple[int, int], style: str,
                 people: int) -> Tuple[np.ndarray, List[np.ndarray],
                                       List[np.ndarray]]:
    """One image of ``people`` people standing side by side.

    Returns:
        The image, and per person (left to right) its joints (0-based
        pixels) and head box (x1, y1, x2, y2).
    """
    if people == 1:
        img, joints, head_box = render(rng, size, style)
        return img, [joints], [head_box]
    img, base = _background(rng, size, style)
    heights = rng.uniform(0.4, 0.6, people) * size[1]
    poses = [random_pose(rng, height, style) for height in heights]
    joints, heights = _stand_side_by_side(rng, poses, heights, size)
    head_boxes = [None] * people
    for i in rng.permutation(people):  # who stands in front varies
        head_boxes[i] = _draw_person(img, rng, joints[i], heights[i], base)
    return img, joints, head_boxes


def _mpii_record(name: str, joints: np.ndarray) -> Dict:
    """The MPII annotation of one person (1-based coordinates)."""
    lo, hi = joints.min(0), joints.max(0)
    centre = (lo + hi) / 2
    extent = float(max(hi - lo))
    return dict(
        image=name,
        # MPII: 1-based centre; scale = box side / 200. MMPose moves the
        # centre down by 15 * scale px, so move it up by as much here.
        center=[float(centre[0] + 1),
                float(centre[1] + 1 - 15 * extent / 200)],
        scale=extent / 200,
        joints=(joints + 1).round(2).tolist(),
        joints_vis=[1] * 16)


def write_split(out: str, split: str, n: int, first_id: int,
                rng: np.random.Generator, size, style,
                people: Tuple[int, int] = (1, 1)) -> Tuple[list, list]:
    """Write ``n`` images; returns their records and head boxes (1-based)."""
    anns, boxes = [], []
    for i in range(n):
        # A fixed count draws nothing, so one person per image keeps the
        # draws (and bytes) of the data sets written before.
        count = people[0] if people[0] == people[1] else \
            int(rng.integers(people[0], people[1] + 1))
        img, joints, head_boxes = render_group(rng, size, style, count)
        name = f'{first_id + i:09d}.jpg'
        cv2.imwrite(osp.join(out, 'images', name), img,
                    [cv2.IMWRITE_JPEG_QUALITY, 92])
        for person, head_box in zip(joints, head_boxes):
            anns.append(_mpii_record(name, person))
            boxes.append(head_box + 1)
    with open(osp.join(out, 'annotations', f'mpii_{split}.json'), 'w') as f:
        json.dump(anns, f)
    return anns, boxes


def make_synthetic_mpii(out: str, num_train: int, num_val: int, seed: int = 0,
                        size=(128, 128), style: str = 'default',
                        people_per_image: Union[int, str] = 1) -> Dict:
    """Write the data set; returns its summary.

    Args:
        out: Output folder (MPII layout, see the module docstring).
        num_train: Train images.
        num_val: Val images.
        seed: Seed of every random draw.
        size: Image size (W, H).
        style: ``'default'`` or ``'shifted'`` (other proportions and
            backgrounds: a public set from another distribution).
        people_per_image: People (records) per image: a count (``1``) or a
            range ``'LO-HI'`` (``'2-3'``) drawn uniformly per image.

    Returns:
        The arguments, and the number of images and of records per split
        (``train``/``val``: ``dict(images=..., records=...)``).
    """
    people = parse_people_per_image(people_per_image)
    os.makedirs(osp.join(out, 'images'), exist_ok=True)
    os.makedirs(osp.join(out, 'annotations'), exist_ok=True)
    rng = np.random.default_rng(seed)
    train, _ = write_split(out, 'train', num_train, 1, rng, size, style,
                           people)
    val, boxes = write_split(out, 'val', num_val, num_train + 1, rng, size,
                             style, people)
    # headboxes_src[:, :, i] = [[x1, y1], [x2, y2]] for val record i.
    headboxes = np.stack([b.reshape(2, 2) for b in boxes], axis=2) \
        if boxes else np.zeros((2, 2, 0))
    savemat(osp.join(out, 'annotations', 'mpii_gt_val.mat'),
            dict(headboxes_src=headboxes))
    return dict(out=out, num_train=num_train, num_val=num_val, seed=seed,
                size=list(size), style=style,
                people_per_image=people[0] if people[0] == people[1] else
                f'{people[0]}-{people[1]}',
                train=dict(images=num_train, records=len(train)),
                val=dict(images=num_val, records=len(val)))


def _people_per_image_arg(value: str) -> str:
    try:
        parse_people_per_image(value)
    except ValueError as e:  # argparse shows this message, not its own
        raise argparse.ArgumentTypeError(str(e)) from e
    return value


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('out', help='output folder (MPII layout)')
    parser.add_argument('--num-train', type=int, default=512,
                        help='train images')
    parser.add_argument('--num-val', type=int, default=128,
                        help='val images')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--size', type=int, nargs=2, default=(128, 128),
                        metavar=('W', 'H'))
    parser.add_argument('--style', choices=('default', 'shifted'),
                        default='default',
                        help='shifted: other proportions and backgrounds '
                        '(a public set from another distribution)')
    parser.add_argument('--people-per-image', default='1',
                        type=_people_per_image_arg, metavar='{K,LO-HI}',
                        help='people (annotation records) per image: a '
                        'count, or a range such as 2-3 drawn per image '
                        '(default: 1)')
    args = parser.parse_args()
    summary = make_synthetic_mpii(args.out, args.num_train, args.num_val,
                                  args.seed, tuple(args.size), args.style,
                                  args.people_per_image)
    print(json.dumps(summary))


if __name__ == '__main__':
    main()
