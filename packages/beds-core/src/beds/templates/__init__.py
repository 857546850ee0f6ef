"""Template declarations: model, TOML loader and payload validation."""

from beds.templates.loader import parse_template as parse_template
from beds.templates.model import (
    AccessRules as AccessRules,
)
from beds.templates.model import (
    Capabilities as Capabilities,
)
from beds.templates.model import (
    FieldSpec as FieldSpec,
)
from beds.templates.model import (
    FieldType as FieldType,
)
from beds.templates.model import (
    OperationSpec as OperationSpec,
)
from beds.templates.model import (
    QuerySpec as QuerySpec,
)
from beds.templates.model import (
    Template as Template,
)
from beds.templates.validate import validate_fetch as validate_fetch
from beds.templates.validate import validate_write as validate_write

__all__ = (
    "AccessRules",
    "Capabilities",
    "FieldSpec",
    "FieldType",
    "OperationSpec",
    "QuerySpec",
    "Template",
    "parse_template",
    "validate_fetch",
    "validate_write",
)
