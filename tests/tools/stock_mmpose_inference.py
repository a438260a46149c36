"""Run an exported model with stock MMPose only (no mmpose_dp): MMPose's
init_model + inference_topdown on the given images and boxes; prints one
JSON line with the keypoints and whether mmpose_dp was ever imported.

Usage: python stock_mmpose_inference.py CONFIG MODEL '{"img.jpg": [[x1, y1,
x2, y2], ...]}'
"""
import json
import sys

import numpy as np
import torch
from mmpose.apis import inference_topdown, init_model


def main():
    config, checkpoint, images = sys.argv[1], sys.argv[2], sys.argv[3]
    meta = torch.load(checkpoint, weights_only=True)['meta']
    model = init_model(config, checkpoint, device='cpu')
    keypoints = {}
    for path, boxes in json.loads(images).items():
        results = inference_topdown(model, path,
                                    np.asarray(boxes, dtype=np.float32))
        keypoints[path] = [r.pred_instances.keypoints.tolist()
                           for r in results]
    print(json.dumps(dict(
        keypoints=keypoints, epsilon=meta['privacy']['card']['epsilon'],
        mmpose_dp=sorted(m for m in sys.modules
                         if m.split('.')[0] == 'mmpose_dp'))))


if __name__ == '__main__':
    main()
