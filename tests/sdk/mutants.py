"""Deliberately broken copies of one valid status-update fixture. validate.py and typecheck.py
must refuse every one: the self-test that shows their checks are strict enough. Also the
verdict both checks end with (`report`)."""

import copy
import sys


def report(check: str, valid: int, must_fail: int, broken: int, failures: list[str]) -> None:
    """Print every failure and the check's one-line verdict; exit 1 when anything failed."""
    for failure in failures:
        print(failure, file=sys.stderr)
    verdict = "FAILED" if failures else "ok"
    print(f"{check}: {valid} valid, {must_fail} must-fail and {broken} broken samples refused: {verdict}")
    sys.exit(1 if failures else 0)


def mutants(doc: dict) -> dict[str, dict]:
    """Name -> broken copy of `doc`, a status-update whose message has `call` and `timestamp`."""

    def broken(change) -> dict:
        copied = copy.deepcopy(doc)
        change(copied["message"])
        return copied

    def rename(obj: dict, old: str, new: str) -> None:
        obj[new] = obj.pop(old)

    timestamp = doc["message"]["timestamp"]
    # A number where the SDK has a string and the other way round; a numeric string is what a
    # lax parser would coerce to the number.
    flipped = 1795770012000 if isinstance(timestamp, str) else str(timestamp)
    return {
        "missing-required-status": broken(lambda m: m.pop("status")),
        "missing-required-call.orgId": broken(lambda m: m["call"].pop("orgId")),
        "wrong-type-call.id": broken(lambda m: m["call"].update(id=12345)),
        "wrong-type-timestamp": broken(lambda m: m.update(timestamp=flipped)),
        "unknown-field-durationSeconds": broken(lambda m: m.update(durationSeconds=42)),
        "unknown-field-call.metadata": broken(lambda m: m["call"].update(metadata={"voxanne_tenant": "t"})),
        "snake-case-call.org_id": broken(lambda m: rename(m["call"], "orgId", "org_id")),
        "unknown-enum-status": broken(lambda m: m.update(status="paused")),
        "unknown-type": broken(lambda m: m.update(type="status-updated")),
    }
