"""BEDS REL adapter: MariaDB/MySQL stored procedures, views and functions through asyncmy."""

from beds_rel.adapter import RelAdapter as RelAdapter
from beds_rel.errors import map_exceptions as map_exceptions
from beds_rel.schema import Statement as Statement
from beds_rel.schema import split_statements as split_statements
from beds_rel.settings import RelConfig as RelConfig

__all__ = ("RelAdapter", "RelConfig", "Statement", "map_exceptions", "split_statements")
