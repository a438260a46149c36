"""Export a private model for stock MMPose and ONNX, with its privacy card.

Writes, in one folder: ``config.py`` (a stock MMPose config, see
:mod:`.stock_config`), ``model.pth`` (``state_dict`` and ``meta`` only, the
card, ledger and plan in ``meta['privacy']``, so that a later ``load_from``
is recognised as a DP model; loadable with ``torch.load(weights_only=True)``),
``privacy_card.json`` and ``PRIVACY.md`` (:mod:`.card`), and with ``onnx``
``model.onnx``. The exported network is rebuilt from ``config.py`` and
checked against the private model as its run trained it, on a random
crop, before anything is written.
"""
import copy
import json
import os
import os.path as osp
from typing import Dict, List, Tuple

import torch
from mmengine.config import Config

from ..engine.model_preparation import batch_norm_settings
from ..privacy import NotPrivateError
from .card import card_markdown, privacy_card
from .onnx_export import export_onnx, onnx_difference, outputs
from .private_model import build_private_model, read_private_checkpoint
from .stock_config import exported_config, project_modules

#: Largest difference allowed between the private and the exported network.
ATOL = 1e-5


def input_size(cfg: Config) -> Tuple[int, int]:
    """(w, h) of the network's input crop."""
    codec = cfg.get('codec')
    codec = codec[0] if isinstance(codec, (list, tuple)) else codec
    if isinstance(codec, dict) and 'input_size' in codec:
        return tuple(codec['input_size'])
    for step in cfg.test_dataloader.dataset.pipeline:
        if step['type'] == 'TopdownAffine':
            return tuple(step['input_size'])
    raise ValueError('no input size found (codec.input_size or a '
                     'TopdownAffine step in the test pipeline)')


def _leaves(model) -> List[Tuple[str, object]]:
    return [(n, m) for n, m in model.named_modules()
            if not list(m.children()) and (list(m.parameters(False)) or
                                           list(m.buffers(False)))]


def renamed_state_dict(state_dict: Dict, source, target) -> Dict:
    """``state_dict`` of ``source`` under ``target``'s names: their leaf
    modules paired in order, which must agree in type and shapes. MMCV
    names a norm layer by its kind (``bn1`` for BatchNorm, ``gn1`` for
    GroupNorm), so a network converted in place keeps ``bn1`` where a
    GroupNorm config builds ``gn1``."""
    pairs = list(zip(_leaves(source), _leaves(target)))
    if len(_leaves(source)) != len(_leaves(target)):
        raise KeyError('the networks have different layers')
    names = {}
    for (a, ma), (b, mb) in pairs:
        if type(ma) is not type(mb):
            raise KeyError(f'{a} is a {type(ma).__name__}, {b} a '
                           f'{type(mb).__name__}')
        names[a] = b
    out = {}
    for key, value in state_dict.items():
        module, _, leaf = key.rpartition('.')
        out[f'{names.get(module, module)}.{leaf}' if module else key] = value
    return out


def _rebuilt(cfg: Config, state_dict: Dict, private) -> Tuple[object, Dict]:
    """The network of ``cfg`` with the private weights, and those weights
    under its parameter names."""
    from mmpose.registry import MODELS
    model_cfg = copy.deepcopy(cfg.model)
    if 'backbone' in model_cfg:
        model_cfg.backbone.init_cfg = None
    model = MODELS.build(model_cfg)
    if set(model.state_dict()) != set(state_dict):
        state_dict = renamed_state_dict(state_dict, private, model)
    model.load_state_dict(state_dict, strict=True)
    return model.eval(), state_dict


def _difference(a, b, example) -> float:
    return max(float((x - y).abs().max())
               for x, y in zip(outputs(a, example), outputs(b, example)))


def export_private_model(config: str, checkpoint: str, out: str,
                         onnx: bool = False,
                         allow_mmpose_dp_modules: bool = False) -> Dict:
    """Export; returns what was written and checked."""
    cfg = Config.fromfile(config)
    state_dict, ledger, plan, search = read_private_checkpoint(checkpoint)
    num_groups = batch_norm_settings(dict(cfg.get('privacy') or {}))[
        'num_groups']
    private = build_private_model(cfg, plan)
    private.load_state_dict(state_dict, strict=True)
    private.eval()
    w, h = input_size(cfg)
    example = torch.randn(2, 3, h, w, generator=torch.Generator()
                          .manual_seed(0))
    exported, model, why = None, None, []
    for stock in (True, False):
        candidate = exported_config(cfg, plan, num_groups, stock)
        try:
            model, weights = _rebuilt(candidate, state_dict, private)
            difference = _difference(private, model, example)
        except (RuntimeError, KeyError, ValueError) as err:
            why.append(f'{type(err).__name__}: {str(err)[:300]}')
            continue
        if difference <= ATOL:
            exported = candidate
            break
        why.append(f'outputs differ by {difference:.3g}')
    if exported is None:
        raise NotPrivateError(
            'the exported config does not rebuild the private network: '
            + '; '.join(why))
    needed = project_modules(exported.model)
    if needed and not allow_mmpose_dp_modules:
        raise NotPrivateError(
            f'the trained network needs mmpose_dp model modules {needed} '
            '(no stock MMPose module computes the same: e.g. GroupNorm '
            'where a stock head hard-codes BatchNorm). Pass '
            '--allow-mmpose-dp-modules to export a config that imports '
            "mmpose_dp.models (model modules only, no privacy machinery), "
            'or use the ONNX export (--onnx), which needs neither')
    card = privacy_card(ledger, plan, osp.basename(checkpoint), search)
    os.makedirs(out, exist_ok=True)
    exported.dump(osp.join(out, 'config.py'))
    torch.save(dict(state_dict={k: v.detach().cpu().clone()
                                for k, v in weights.items()},
                    meta=dict(privacy=dict(card=card, ledger=ledger,
                                           plan=plan.to_dict()))),
               osp.join(out, 'model.pth'))
    with open(osp.join(out, 'privacy_card.json'), 'w') as f:
        json.dump(card, f, indent=1)
    with open(osp.join(out, 'PRIVACY.md'), 'w') as f:
        f.write(card_markdown(card))
    report = dict(out=out, mmpose_dp_modules=needed,
                  difference=_difference(private, model, example),
                  epsilon=card['epsilon'], delta=card['delta'])
    if onnx:
        path = osp.join(out, 'model.onnx')
        export_onnx(model, example[:1], path)
        report['onnx'] = onnx_difference(model, example, path)
    return report


def summary(report: Dict) -> str:
    line = (f"exported to {report['out']}: ({report['epsilon']:.4g}, "
            f"{report['delta']:.3g})-DP; exported network matches the "
            f"private one to {report['difference']:.1e}; ")
    line += ('stock MMPose config' if not report['mmpose_dp_modules'] else
             f"config needs mmpose_dp model modules "
             f"{report['mmpose_dp_modules']}")
    if 'onnx' in report:
        onnx = report['onnx']
        line += ('; model.onnx (onnxruntime not installed: not checked)'
                 if onnx is None else '; model.onnx matches torch to ' +
                 ', '.join(f'{k} {v:.1e}' for k, v in onnx.items()))
    return line


