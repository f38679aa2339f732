"""msgspec writes JSON Schema 2020-12; the published document is OpenAPI 3.0 (what the spec
promises and what most client generators read), whose Schema Object is an older dialect: no
`null` type (a `nullable` flag instead), no siblings beside `$ref`, one `example`, no
`propertyNames`, no empty `required`. This turns the one into the other."""

from __future__ import annotations

from typing import Any

# 3.0 has no keyword for a key's schema; an extension keeps what integer-keyed maps accept
# (Postman's request templates read it).
KEY_SCHEMA = "x-propertyNames"


def schema_30(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI 3.0 Schema Object saying what the 2020-12 `schema` says."""
    converted = {key: _value(key, value) for key, value in schema.items()}
    options = converted.get("anyOf")
    if options and any(option.get("type") == "null" for option in options):
        converted = _nullable(converted, [o for o in options if o.get("type") != "null"])
    if converted.get("type") == "null":  # always null: 3.0 has no such type
        del converted["type"]
        converted.update(nullable=True, enum=[None])
    if "examples" in converted:
        converted["example"] = converted.pop("examples")[0]
    if "propertyNames" in converted:
        converted[KEY_SCHEMA] = converted.pop("propertyNames")
    if converted.get("required") == []:
        del converted["required"]  # 3.0 wants at least one name, or no list
    if "$ref" in converted and len(converted) > 1:
        reference = converted.pop("$ref")
        converted["allOf"] = [{"$ref": reference}]
    return converted


def _value(key: str, value: Any) -> Any:
    """Subschemas are converted; `properties` maps names to subschemas; other values stay."""
    if key in ("items", "additionalProperties", "propertyNames") and isinstance(value, dict):
        return schema_30(value)
    if key in ("anyOf", "oneOf", "allOf"):
        return [schema_30(option) for option in value]
    if key == "properties":
        return {name: schema_30(sub) for name, sub in value.items()}
    return value


def _nullable(schema: dict[str, Any], kept: list[dict[str, Any]]) -> dict[str, Any]:
    """`anyOf: [X, {type: null}]` is X with `nullable: true` (a `$ref` is wrapped in `allOf`,
    as 3.0 ignores a reference's siblings); an enum lists `null` among its values."""
    rest = {key: value for key, value in schema.items() if key != "anyOf"}
    if len(kept) != 1:
        return {**rest, "anyOf": kept, "nullable": True}
    (only,) = kept
    if "$ref" in only:
        return {**rest, "allOf": [only], "nullable": True}
    merged = {**only, **rest, "nullable": True}
    if "enum" in merged:
        merged["enum"] = [*merged["enum"], None]
    return merged
