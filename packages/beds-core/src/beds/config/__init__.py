"""Node configuration: layered TOML loaded into typed attrs models."""

from beds.config.loader import load_config as load_config
from beds.config.model import Config as Config
from beds.config.model import FieldValueError as FieldValueError
from beds.config.structure import structure_table as structure_table

__all__ = ("Config", "FieldValueError", "load_config", "structure_table")
