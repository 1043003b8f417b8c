#!/usr/bin/env python3
"""Validates Vapi server-message fixtures against the installed vapi-server-sdk's pydantic models.

    validate.py [--build DIR [--large DIR]] [--self-test FIXTURE] [--must-fail FIXTURE]... FIXTURE...

Each fixture is {"message": {...}}, or, under replies/, the body the product answers the fixture
of the same name with, parsed as the SDK's `ServerMessageResponse<Type>` of that fixture's
message type and held to the same rules. The member of the SDK's `ServerMessage.message` union is the
one whose `type` literal is the message's `type` (when `type` is missing: the one member whose
`type` is optional); the message is parsed with the SDK's own `parse_obj_as` into that member.
Pydantic's lax parsing and the SDK's open models let much through, so the parsed message is then
held to the SDK's types:
  - no field the model does not declare, at any depth (the models keep unknown fields as extras);
  - a value of an open enum (`Literal[...] | Any`) is one of its literals;
  - serialized back with the SDK's serializer it is the input again: same keys, same JSON types,
    so nothing was coerced (a numeric string into a float, ...) and no field went in by its
    Python name.

--build DIR runs build_fixtures.py into DIR first, in this process: importing the 3.0.0 models
costs most of a minute. --self-test FIXTURE also validates each broken copy of FIXTURE from
mutants.py and fails unless every one is refused; --must-fail FIXTURE fails unless FIXTURE is
refused (legacy shapes against the current SDK).
"""

import argparse
import datetime as dt
import json
import pathlib
import typing
from importlib import metadata

import mutants
import replies
from vapi.core.jsonable_encoder import jsonable_encoder
from vapi.core.pydantic_utilities import parse_obj_as
import vapi.types
from vapi.types import ServerMessage

import pydantic


def strip(annotation):
    """The type inside Annotated[...]."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def literals(annotation) -> tuple:
    annotation = strip(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Union:
        return tuple(v for arg in typing.get_args(annotation) for v in literals(arg))
    return ()


def field_alias(name: str, field) -> str:
    """The wire name: a pydantic alias (3.0.0) or the SDK's FieldMetadata alias (0.1.0)."""
    if field.alias:
        return field.alias
    return next((m.alias for m in field.metadata if hasattr(m, "alias")), name)


MEMBERS = typing.get_args(strip(ServerMessage.model_fields["message"].annotation))


def member_for(message: dict):
    if "type" in message:
        found = [m for m in MEMBERS if message["type"] in literals(m.model_fields["type"].annotation)]
    else:
        found = [m for m in MEMBERS if not m.model_fields["type"].is_required()]
    if len(found) != 1:
        raise ValueError(f"{len(found)} members of ServerMessage.message for type {message.get('type')!r}")
    return found[0]


def undeclared(model: pydantic.BaseModel, path: str) -> list[str]:
    """Fields the SDK's models do not declare, and open-enum values outside their literals."""
    problems = [
        f"{path}.{key}: not a field of {type(model).__name__}" for key in model.__pydantic_extra__ or {}
    ]
    for name, field in type(model).model_fields.items():
        if name in model.model_fields_set:
            problems += undeclared_in(
                field.annotation, getattr(model, name), f"{path}.{field_alias(name, field)}"
            )
    return problems


def undeclared_in(annotation, value, path: str) -> list[str]:
    if isinstance(value, pydantic.BaseModel):
        return undeclared(value, path)
    annotation = strip(annotation)
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Union:
        allowed = literals(annotation)
        if (
            isinstance(value, str)
            and allowed
            and typing.Any in args
            and str not in args
            and value not in allowed
        ):
            return [f"{path}: {value!r} is none of the SDK's values ({len(allowed)} known)"]
        containers = [a for a in map(strip, args) if typing.get_origin(a) in (list, dict)]
        return undeclared_in(containers[0], value, path) if containers else []
    if typing.get_origin(annotation) is list and isinstance(value, list):
        return [p for i, item in enumerate(value) for p in undeclared_in(args[0], item, f"{path}[{i}]")]
    if typing.get_origin(annotation) is dict and isinstance(value, dict):
        return [p for key, item in value.items() for p in undeclared_in(args[1], item, f"{path}.{key}")]
    return []


def same_instant(a: str, b: str) -> bool:
    try:
        x, y = dt.datetime.fromisoformat(a), dt.datetime.fromisoformat(b)
    except ValueError:
        return False
    return x.tzinfo is not None and y.tzinfo is not None and x == y


def difference(given, back, path: str) -> str | None:
    """Where the re-serialized message differs from the input (None: nowhere)."""
    if isinstance(given, dict) and isinstance(back, dict):
        if given.keys() != back.keys():
            return f"{path}: keys {sorted(given.keys() ^ back.keys())} differ after the round trip"
        return next((d for k in given if (d := difference(given[k], back[k], f"{path}.{k}"))), None)
    if isinstance(given, list) and isinstance(back, list) and len(given) == len(back):
        return next(
            (d for i, (a, b) in enumerate(zip(given, back)) if (d := difference(a, b, f"{path}[{i}]"))), None
        )
    numbers = (int, float)
    if (
        isinstance(given, numbers)
        and isinstance(back, numbers)
        and not isinstance(given, bool)
        and not isinstance(back, bool)
    ):
        same = given == back
    elif isinstance(given, str) and isinstance(back, str):
        same = given == back or same_instant(given, back)
    else:
        same = type(given) is type(back) and given == back
    return None if same else f"{path}: {given!r} came back as {back!r}"


def reply_problems(path: pathlib.Path, doc) -> list[str]:
    try:
        parsed = parse_obj_as(getattr(vapi.types, replies.document_type(path)), doc)
    except (AttributeError, ValueError, pydantic.ValidationError) as error:
        return [str(error)]
    back = difference(doc, jsonable_encoder(parsed), "reply")
    return undeclared(parsed, "reply") + ([back] if back else [])


def problems(doc) -> list[str]:
    if not isinstance(doc, dict) or list(doc) != ["message"] or not isinstance(doc["message"], dict):
        return ['not {"message": {...}}']
    message = doc["message"]
    try:
        member = member_for(message)
        parsed = parse_obj_as(member, message)
        # The envelope, with the SDK's own parse entry (lax on its own: see the docstring).
        parse_obj_as(ServerMessage, {"message": parsed})
    except (ValueError, pydantic.ValidationError) as error:
        return [str(error)]
    found = undeclared(parsed, "message")
    back = difference(message, jsonable_encoder(parsed), "message")
    return found + ([back] if back else [])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--build", type=pathlib.Path)
    parser.add_argument("--large", type=pathlib.Path)
    parser.add_argument("--self-test", type=pathlib.Path)
    parser.add_argument("--must-fail", type=pathlib.Path, action="append", default=[])
    parser.add_argument("fixtures", type=pathlib.Path, nargs="*")
    args = parser.parse_args()
    sdk = f"vapi-server-sdk=={metadata.version('vapi-server-sdk')}"
    if args.build:
        import build_fixtures

        build_fixtures.build(args.build, args.large)
    failures = []
    for path in args.fixtures:
        doc = json.loads(path.read_text())
        found = reply_problems(path, doc) if replies.is_typed(path) else problems(doc)
        failures += [f"{path}: {p}" for p in found]
    for path in args.must_fail:
        if not problems(json.loads(path.read_text())):
            failures.append(f"{path}: accepted, but it must be refused by {sdk}")
    broken = mutants.mutants(json.loads(args.self_test.read_text())) if args.self_test else {}
    for name, doc in broken.items():
        if not problems(doc):
            failures.append(f"self-test: the broken sample {name!r} of {args.self_test} was accepted")
    for path in filter(replies.is_typed, args.fixtures):
        for name, doc in replies.broken(json.loads(path.read_text())).items():
            broken[f"{path.name} {name}"] = doc
            if not reply_problems(path, doc):
                failures.append(f"self-test: the broken reply {name!r} of {path} was accepted")
    mutants.report(f"pydantic {sdk}", len(args.fixtures), len(args.must_fail), len(broken), failures)


if __name__ == "__main__":
    main()
