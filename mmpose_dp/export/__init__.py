"""A private model out of the plugin: stock MMPose config, weights-only
checkpoint, ONNX, and its privacy card."""
from .card import card_markdown, privacy_card
from .export import export_private_model, summary
from .private_model import (build_private_model, load_private_model,
                            read_private_checkpoint)
from .stock_config import exported_config, project_modules

__all__ = ['card_markdown', 'privacy_card', 'export_private_model',
           'summary', 'build_private_model', 'load_private_model',
           'read_private_checkpoint', 'exported_config', 'project_modules']
