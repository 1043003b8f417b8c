"""The SDK type a fixture that is no server message is checked as, for validate.py and
typecheck.py.

replies/<name> is the body the product answers fixture <name> with; its type is the SDK's
`ServerMessageResponse<Type>` of that fixture's message type (a tool-calls may come without
`type`): `call.endpointing.request` -> `ServerMessageResponseCallEndpointingRequest`.
calls/<sequence> is that sequence's call as Vapi's API returns it (`GET /call/{id}`): a `Call`.
"""

import json
import pathlib


def is_reply(path: pathlib.Path) -> bool:
    return path.parent.name == "replies"


def is_typed(path: pathlib.Path) -> bool:
    """A reply or a call: a document of its own SDK type, not a server message."""
    return is_reply(path) or path.parent.name == "calls"


def document_type(path: pathlib.Path) -> str:
    return response_type(path) if is_reply(path) else "Call"


def response_type(path: pathlib.Path) -> str:
    message = json.loads((path.parent.parent / path.name).read_text())["message"]
    words = message.get("type", "tool-calls").replace(".", "-").split("-")
    return "ServerMessageResponse" + "".join(word.capitalize() for word in words)


# Call's fields the Python SDK types as open enums (`Union[Literal[...], Any]`): any value
# passes there, so one of another JSON type is no broken sample
OPEN_ENUMS = {"status", "type", "endedReason", "phoneCallProvider", "phoneCallTransport"}


def broken(doc: dict) -> dict[str, dict]:
    """Copies of a typed `doc` every check must refuse: a field its type does not declare, and
    each field's value of another JSON type (open enums aside)."""
    flipped = {str: 1, bool: "false", int: "1", float: "0.4", list: {}, dict: []}
    out = {"undeclared-field": {**doc, "voxanneUndeclared": True}}
    for key, value in doc.items():
        if key not in OPEN_ENUMS:
            out[f"wrong-type-{key}"] = {**doc, key: flipped[type(value)]}
    return out
