"""Export a private model: stock MMPose config, weights-only checkpoint,
privacy card, and optionally ONNX.

Usage::

    python tools/export_private_model.py CONFIG CHECKPOINT --out DIR \\
        [--onnx] [--allow-mmpose-dp-modules]

``DIR/config.py`` and ``DIR/model.pth`` load with MMPose's ``init_model``
without mmpose_dp (where the network is made of stock modules; else the
config imports ``mmpose_dp.models`` and ``--allow-mmpose-dp-modules`` must
say that is fine); ``DIR/privacy_card.json`` and ``DIR/PRIVACY.md`` state
the guarantee, which ``model.pth`` also carries in ``meta['privacy']``.
"""
import argparse
import sys

from mmpose_dp.export import export_private_model, summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='the config the run was trained with')
    parser.add_argument('checkpoint', help='a checkpoint of the private run')
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--onnx', action='store_true',
                        help='also write model.onnx (checked with '
                        'onnxruntime when installed)')
    parser.add_argument('--allow-mmpose-dp-modules', action='store_true',
                        help='export a network that needs mmpose_dp model '
                        'modules (its config imports mmpose_dp.models)')
    args = parser.parse_args(argv)
    report = export_private_model(args.config, args.checkpoint, args.out,
                                  args.onnx, args.allow_mmpose_dp_modules)
    print(summary(report))
    return report


if __name__ == '__main__':
    sys.exit(0 if main() else 1)
