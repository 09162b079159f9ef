"""Backbones: one interface (prompt batch -> states at the K read positions) for every model kind."""
from diffret_pyserini.model.backbones.base import Backbone, SlotStates
from diffret_pyserini.model.backbones.checks import ModelLoadError
from diffret_pyserini.model.backbones.load import KINDS, load_backbone, read_spec
from diffret_pyserini.model.device import DeviceError

__all__ = ["Backbone", "SlotStates", "KINDS", "DeviceError", "ModelLoadError", "load_backbone", "read_spec"]
