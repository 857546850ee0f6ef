"""The domain generator: a description (TOML) in, a complete template package out.

=================  ========================================================================
module             what it does
=================  ========================================================================
``description``    the description format: read and check it (:class:`DescriptionError`)
``jsonschema``     the JSON Schema of a description, for tools that write one
``model``          the checked description as frozen data, and its JSON snapshot
``names``          safe identifiers: MariaDB reserved words, Python and BEDS names
``values``         example values (docs, generated tests), checked like payloads
``shape``          what an entity becomes, by name: objects, params, queries
``templates``      the templates (``templates/*.toml``)
``toml``           the small deterministic TOML writer the templates are written with
``rel``            MariaDB DDL, views and procedures by the REL adapter's conventions
``rec``            MongoDB collection validators and indexes
``docs``           markdown API documentation per template
``testmodule``     the generated package's pytest module
``package``        pyproject, plugin, README; ``generate`` puts every file together
``migration``      the next numbered schema migration of a changed description
``diff``           a package on disk against a new description: the diff, and writing it
=================  ========================================================================

Generation is pure (``beds.generator.package.generate``: a description -> ``{path: bytes}``);
writing is :mod:`beds.generator.diff`'s, through a temporary directory moved into place.
"""

from beds.generator.description import DescriptionError as DescriptionError
from beds.generator.description import parse_description as parse_description
from beds.generator.description import read_description as read_description
from beds.generator.jsonschema import description_schema as description_schema

__all__ = ("DescriptionError", "description_schema", "parse_description", "read_description")
