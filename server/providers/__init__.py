"""Language-model providers behind one streaming interface."""

from server.providers.base import Brief, Prompt, Provider
from server.providers.synthetic import SyntheticProvider

__all__ = ["Brief", "Prompt", "Provider", "SyntheticProvider"]
