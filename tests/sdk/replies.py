"""The SDK type a reply fixture is checked as, for validate.py and typecheck.py.

replies/<name> is the body the product answers fixture <name> with; its type is the SDK's
`ServerMessageResponse<Type>` of that fixture's message type (a tool-calls may come without
`type`): `call.endpointing.request` -> `ServerMessageResponseCallEndpointingRequest`.
"""

import json
import pathlib


def is_reply(path: pathlib.Path) -> bool:
    return path.parent.name == "replies"


def response_type(path: pathlib.Path) -> str:
    message = json.loads((path.parent.parent / path.name).read_text())["message"]
    words = message.get("type", "tool-calls").replace(".", "-").split("-")
    return "ServerMessageResponse" + "".join(word.capitalize() for word in words)


def broken(doc: dict) -> dict[str, dict]:
    """Copies of reply `doc` every check must refuse: a field no response type declares, and each
    field's value of another JSON type."""
    flipped = {str: 1, bool: "false", int: "1", float: "0.4", list: {}, dict: []}
    out = {"undeclared-field": {**doc, "voxanneUndeclared": True}}
    for key, value in doc.items():
        out[f"wrong-type-{key}"] = {**doc, key: flipped[type(value)]}
    return out
