"""Backbones: one interface (prompt batch -> states at the K read positions) for every model kind."""
from diffret_pyserini.backbones.base import Backbone, SlotStates
from diffret_pyserini.backbones.checks import ModelLoadError
from diffret_pyserini.backbones.load import KINDS, load_backbone, read_spec

__all__ = ["Backbone", "SlotStates", "KINDS", "ModelLoadError", "load_backbone", "read_spec"]
