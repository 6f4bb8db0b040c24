"""The recipe reference (docs/reference/recipe.md), generated from the pydantic schema.

The schema is the one source of truth for what a recipe may say; this renders it as Markdown so the
documentation cannot drift from the code (``tests/test_recipe_reference.py`` checks the committed page is
current; ``edgesparse schema --markdown > docs/reference/recipe.md`` regenerates it).
"""

from __future__ import annotations

import json
import re
from typing import Any

HEADER = """# Recipe reference

Generated from the recipe's pydantic schema by `edgesparse schema --markdown` (do not edit by hand: a test
checks that this page is current). Every section forbids unknown keys; a field without a default is required.
The [recipe guide](../recipes.md) shows a whole recipe with comments; `edgesparse schema` prints the JSON schema
for editors.
"""


def _anchor(name: str) -> str:
    return re.sub(r"[^a-z0-9-]", "", name.lower().replace(" ", "-"))


def _type(schema: dict[str, Any]) -> str:
    """A field's type in words, with links to the sections of nested models."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{_anchor(name)})"
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if "enum" in schema:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " \\| ".join(_type(s) for s in schema[key])
    kind = schema.get("type")
    if kind == "array":
        if "prefixItems" in schema:
            return "[" + ", ".join(_type(s) for s in schema["prefixItems"]) + "]"
        return f"list of {_type(schema.get('items', {}))}" if schema.get("items") else "list"
    if kind == "object":
        extra = schema.get("additionalProperties")
        return f"map of {_type(extra)}" if isinstance(extra, dict) and extra else "mapping"
    if kind is None:
        return "any"
    return str(kind)


_LIMITS = (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<"),
           ("minLength", "length >="), ("maxLength", "length <="), ("pattern", "matches"))


def _limits(schema: dict[str, Any]) -> str:
    parts = [f"{word} `{schema[key]}`" for key, word in _LIMITS if key in schema]
    for sub in schema.get("anyOf", []):
        parts += [f"{word} `{sub[key]}`" for key, word in _LIMITS if key in sub]
    return ", ".join(parts)


def _cell(text: str) -> str:
    return " ".join(text.replace("|", "\\|").split())


def _default(value: Any) -> str:
    if isinstance(value, dict) and value:
        return "its section's defaults"
    return f"`{json.dumps(value)}`"


def _section(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"## {name}", ""]
    doc = str(schema.get("description", "")).strip()
    if doc:
        lines += [doc.replace("``", "`"), ""]
    props: dict[str, Any] = schema.get("properties", {})
    if not props:
        return [*lines, f"Type: {_type(schema)}", ""]
    required = set(schema.get("required", []))
    lines += ["| field | type | default | notes |", "|---|---|---|---|"]
    for field, sub in props.items():
        default = "*required*" if field in required else _default(sub.get("default"))
        notes = "; ".join(p for p in (_cell(str(sub.get("description", ""))), _limits(sub)) if p)
        lines.append(f"| `{field}` | {_type(sub)} | {_cell(default)} | {notes} |")
    return [*lines, ""]


def render(schema: dict[str, Any] | None = None) -> str:
    """The recipe reference as Markdown.

    Args:
        schema: A recipe JSON schema; default the current one (:func:`edgesparse.recipe.json_schema`).

    Returns:
        The page: the top-level recipe first, then every nested section in alphabetical order.
    """
    if schema is None:
        from edgesparse.recipe import json_schema

        schema = json_schema()
    lines = [HEADER, *_section("Recipe", {k: v for k, v in schema.items() if k != "$defs"})]
    for name, sub in sorted(schema.get("$defs", {}).items()):
        lines += _section(name, sub)
    return "\n".join(lines).rstrip() + "\n"
