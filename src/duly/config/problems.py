"""Pydantic's validation errors as :class:`ConfigProblem` lines: key path, value, rule and origin."""

from __future__ import annotations

import difflib
import json
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from duly.config.errors import ConfigProblem, show_value
from duly.config.settings import ENV_DELIMITER, ENV_PREFIX, Settings

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Origin:
    """Where values came from, to say which variable or file a bad value is in."""

    env: Mapping[str, str | None]
    env_names: Mapping[str, str]
    yaml: dict[str, Any] | None
    label: str

    def of(self, loc: Loc) -> str | None:
        prefix = ENV_PREFIX.lower()
        for size in range(len(loc), 0, -1):
            head = loc[:size]
            if not all(isinstance(part, str) for part in head):
                continue
            name = prefix + ENV_DELIMITER.join(str(part) for part in head).lower()
            if name in self.env:
                rest = loc[size:]
                if not rest or _has_path(_maybe_json(self.env[name]), rest):
                    return self.env_names.get(name, name.upper())
            elif size == len(loc):
                # an unknown key reached through a longer variable: DULY_BOGUS__X
                for candidate in self.env:
                    if candidate.startswith(name + ENV_DELIMITER):
                        return self.env_names.get(candidate, candidate.upper())
        if self.yaml is not None and _has_path(self.yaml, loc):
            return self.label
        return None


def _maybe_json(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value


def _has_path(data: Any, loc: Loc) -> bool:
    for part in loc:
        in_list = isinstance(part, int) and isinstance(data, list) and 0 <= part < len(data)
        in_dict = isinstance(part, str) and isinstance(data, dict) and part in data
        if not (in_list or in_dict):
            return False
        data = data[part]
    return True


def _key(loc: Loc) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def _strip(annotation: Any) -> tuple[Any, list[Any]]:
    """Unwrap ``Annotated`` and ``X | None``: the bare type and its constraint metadata."""
    metadata: list[Any] = []
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation, *extra = get_args(annotation)
            for item in extra:
                metadata.extend(item.metadata if isinstance(item, FieldInfo) else [item])
        elif origin in (Union, types.UnionType):
            members = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(members) != 1:
                return annotation, metadata
            annotation = members[0]
        else:
            return annotation, metadata


def _at(loc: Loc) -> tuple[Any, list[Any]] | None:
    """The type expected at ``loc`` in :class:`Settings`, with its constraints."""
    annotation: Any = Settings
    metadata: list[Any] = []
    for part in loc:
        annotation, _ = _strip(annotation)
        if isinstance(part, int):
            if get_origin(annotation) is not list:
                return None
            annotation, metadata = _strip(get_args(annotation)[0])
            continue
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        field = annotation.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        metadata = list(field.metadata)
    annotation, more = _strip(annotation)
    return annotation, metadata + more


def _bounds(metadata: list[Any]) -> str:
    lower: tuple[str, Any] | None = None
    upper: tuple[str, Any] | None = None
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            lower = ("≥", item.ge)
        elif isinstance(item, annotated_types.Gt):
            lower = (">", item.gt)
        elif isinstance(item, annotated_types.Le):
            upper = ("≤", item.le)
        elif isinstance(item, annotated_types.Lt):
            upper = ("<", item.lt)
    if lower and upper and lower[0] == "≥" and upper[0] == "≤":
        return f"between {show_value(lower[1])} and {show_value(upper[1])}"
    parts = [f"{pair[0]} {show_value(pair[1])}" for pair in (lower, upper) if pair]
    return " and ".join(parts)


def _ctx_bounds(ctx: Mapping[str, Any]) -> list[Any]:
    kinds = {
        "ge": annotated_types.Ge,
        "gt": annotated_types.Gt,
        "le": annotated_types.Le,
        "lt": annotated_types.Lt,
    }
    return [kinds[name](ctx[name]) for name in kinds if name in ctx]


def _allowed_keys(loc: Loc) -> list[str]:
    found = _at(loc)
    if found and isinstance(found[0], type) and issubclass(found[0], BaseModel):
        return list(found[0].model_fields)
    return []


_NUMBER_ERRORS = {
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "a whole number",
    "float_parsing": "a number",
    "float_type": "a number",
    "finite_number": "a finite number",
}


_BOUND_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def _rule(kind: str, loc: Loc, error: Mapping[str, Any], from_env: bool) -> tuple[str, bool]:
    """What is allowed at ``loc``, and whether to show the value."""
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    found = _at(loc)
    metadata = found[1] if found else []
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        guess = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"did you mean {guess[0]}? " if guess else ""
        return f"unknown key ({hint}allowed: {', '.join(allowed)})", False
    if kind == "missing":
        return "required key is missing", False
    if kind in _NUMBER_ERRORS:
        bounds = _bounds(metadata)
        return f"expected {_NUMBER_ERRORS[kind]}{' ' + bounds if bounds else ''}", True
    if kind in _BOUND_ERRORS:
        bounds = _bounds(metadata) or _bounds(_ctx_bounds(ctx))
        return f"must be {bounds}", True
    if kind in ("bool_parsing", "bool_type"):
        return "expected true or false", True
    if kind == "string_type":
        return "expected text", True
    if kind == "string_too_short":
        return "must not be empty", True
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length', 1)} item(s)", True
    if kind == "literal_error":
        return f"expected one of {ctx.get('expected', '')}", True
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "expected a mapping of keys" + (" as a JSON object" if from_env else ""), True
    if kind == "list_type":
        return "expected a list" + (' as a JSON array, e.g. ["a", "b"]' if from_env else ""), True
    return str(error.get("msg", "invalid value")), True


def problems_of(exc: ValidationError, origin: Origin) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    for error in exc.errors(include_url=False):
        loc: Loc = tuple(error["loc"])
        kind = error["type"]
        ctx: Mapping[str, Any] = error.get("ctx") or {}
        value: Any = error.get("input")
        related: list[Loc] = []
        if "at" in ctx:  # a cross-field rule raised on the parent: point at the field
            parent = loc
            loc = parent + tuple(ctx["at"])
            value = ctx.get("value")
            related = [parent + tuple(extra) for extra in ctx.get("related", ())]
        sources: list[str] = []
        for where in (loc, *related):
            source = origin.of(where)
            if source and source not in sources:
                sources.append(source)
        from_env = bool(sources) and sources[0] in origin.env_names.values()
        rule, shows_value = _rule(kind, loc, error, from_env)
        problems.append(
            ConfigProblem(
                key=_key(loc) or "(top level)",
                rule=rule,
                value=show_value(value) if shows_value else None,
                source=", ".join(sources) or None,
            )
        )
    return problems
