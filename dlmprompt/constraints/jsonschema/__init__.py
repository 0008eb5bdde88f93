"""JSON Schema and pydantic models as constraints.

:mod:`.normalize` resolves ``$ref``, checks keywords and folds ``allOf``; :mod:`.regexes` and
:mod:`.values` write one regex per value; :mod:`.template` lays a schema out as anchors and
holes; :mod:`.span` compiles what is not regular into one context-free span (llguidance);
:mod:`.instances` spells instances as texts for acceptance checks. Imports only
:mod:`dlmprompt.constraints` modules, :mod:`dlmprompt.errors` and :mod:`dlmprompt.tokenizer`.
"""

from dlmprompt.constraints.jsonschema.instances import texts_for
from dlmprompt.constraints.jsonschema.normalize import Narrowed, as_schema, non_finite
from dlmprompt.constraints.jsonschema.regexes import STANDARD_FORMATS
from dlmprompt.constraints.jsonschema.template import Hole, Template, compile_schema
from dlmprompt.errors import SchemaError

__all__ = [
    "STANDARD_FORMATS",
    "Hole",
    "Narrowed",
    "SchemaError",
    "Template",
    "as_schema",
    "compile_schema",
    "non_finite",
    "texts_for",
]
