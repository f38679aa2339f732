"""Example values made from OpenAPI 3.0 schemas, for the Postman collection's request templates: a
partner who presses Send gets past decoding."""

from __future__ import annotations

from typing import Any

from services.api.docs.schema30 import KEY_SCHEMA
from services.api.docs.spec import INT_KEY

_STRING_FORMATS = {
    "date": "2026-05-01",
    "date-time": "2026-05-01T19:00:00Z",
    "time": "19:00:00",
    "email": "partner@example.com",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def example_of(schema: dict[str, Any], components: dict[str, Any], depth: int = 0) -> Any:
    """A value that satisfies the schema, for request templates: defaults and first choices,
    minimums for numbers, one item per array."""
    if depth > 12:
        return None
    if "$ref" in schema:
        target = components[schema["$ref"].rsplit("/", 1)[1]]
        siblings = {k: v for k, v in schema.items() if k != "$ref"}
        return example_of({**target, **siblings}, components, depth + 1)
    for key in ("default", "example"):
        if key in schema:
            return schema[key]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return example_of(schema[key][0], components, depth + 1)
    if len(schema.get("allOf", ())) == 1:
        return example_of(schema["allOf"][0], components, depth + 1)
    if "allOf" in schema:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            value = example_of(part, components, depth + 1)
            if isinstance(value, dict):
                merged.update(value)
        return merged
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        if "properties" in schema:
            return {
                name: example_of(sub, components, depth + 1)
                for name, sub in schema["properties"].items()
            }
        extra = schema.get("additionalProperties")
        if not extra:
            return {}
        key = example_of(schema.get(KEY_SCHEMA, {"type": "string"}), components, depth + 1)
        return {key: example_of(extra, components, depth + 1)}
    if kind == "array":
        item = example_of(schema.get("items", {}), components, depth + 1)
        return [item] * max(1, schema.get("minItems", 1))
    if kind in ("integer", "number"):
        value = schema.get("minimum", 0)
        value = min(value, schema.get("maximum", value))
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return False
    if kind == "string":
        if schema.get("pattern") == INT_KEY["pattern"]:
            return "1"
        text = _STRING_FORMATS.get(schema.get("format", ""), "string")
        text = text.ljust(schema.get("minLength", 0), "x")
        return text[: schema["maxLength"]] if "maxLength" in schema else text
    return None
