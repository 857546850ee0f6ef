"""Node configuration: layered TOML loaded into typed attrs models."""

from beds.config.loader import load_config as load_config
from beds.config.model import Config as Config

__all__ = ("Config", "load_config")
