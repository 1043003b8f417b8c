#!/usr/bin/env python3
"""Type-checks Vapi server-message fixtures against an npm @vapi-ai/server-sdk's TypeScript types.

    typecheck.py --tsc TSC --sdk NODE_DIR [--self-test FIXTURE] [--must-fail FIXTURE]... FIXTURE...

Each fixture becomes a module `export const fixture: Vapi.ServerMessage = <its JSON>;` (a reply,
under replies/: `Vapi.ServerMessageResponse<Type>` of the message it answers), an
annotated object literal, so tsc's excess-property check applies at every depth and a field the
types lack is an error. One `tsc --noEmit --strict` run over all of them (NODE_DIR's
node_modules resolves the SDK) must report no error in a fixture, and at least one in each
--must-fail fixture and in each broken copy of the --self-test fixture (mutants.py).
"""

import argparse
import json
import pathlib
import re
import subprocess
import tempfile

import mutants
import replies

DIAGNOSTIC = re.compile(r"^(?P<file>[\w.-]+\.ts)\(\d+,\d+\): error (?P<code>TS\d+): ")
# Errors that say nothing about a fixture: the SDK or the setup is missing.
FATAL = {"TS2307", "TS2305", "TS2694"}


def module(doc, kind: str) -> str:
    header = 'import type { Vapi } from "@vapi-ai/server-sdk";\n\n'
    return f"{header}export const fixture: Vapi.{kind} = {json.dumps(doc, indent=2)};\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tsc", type=lambda p: str(pathlib.Path(p).resolve()), required=True)
    parser.add_argument(
        "--sdk", type=pathlib.Path, required=True, help="folder whose node_modules has the SDK"
    )
    parser.add_argument("--self-test", type=pathlib.Path)
    parser.add_argument("--must-fail", type=pathlib.Path, action="append", default=[])
    parser.add_argument("fixtures", type=pathlib.Path, nargs="*")
    args = parser.parse_args()
    version = json.loads((args.sdk / "node_modules/@vapi-ai/server-sdk/package.json").read_text())["version"]
    sdk = f"@vapi-ai/server-sdk@{version}"

    cases, docs = {}, {}  # module file -> (what it is, must it pass) / its fixture

    def add(what: str, doc: dict, must_pass: bool, kind: str = "ServerMessage") -> None:
        file = f"{'ok' if must_pass else 'bad'}{len(cases)}.ts"
        cases[file], docs[file] = (what, must_pass), (doc, kind)

    for path in args.fixtures:
        kind = replies.document_type(path) if replies.is_typed(path) else "ServerMessage"
        add(str(path), json.loads(path.read_text()), True, kind)
        if replies.is_typed(path):
            for name, doc in replies.broken(json.loads(path.read_text())).items():
                add(f"self-test reply {path.name} {name!r}", doc, False, kind)
    for path in args.must_fail:
        add(str(path), json.loads(path.read_text()), False)
    broken = mutants.mutants(json.loads(args.self_test.read_text())) if args.self_test else {}
    for name, doc in broken.items():
        add(f"self-test sample {name!r}", doc, False)

    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        (root / "node_modules").symlink_to((args.sdk / "node_modules").resolve())
        for file, (doc, kind) in docs.items():
            (root / file).write_text(module(doc, kind))
        config = {
            "compilerOptions": {
                "strict": True,
                "noEmit": True,
                "skipLibCheck": True,
                "module": "nodenext",
                "moduleResolution": "nodenext",
                "target": "es2022",
                "types": [],
            },
            "files": sorted(docs),
        }
        (root / "tsconfig.json").write_text(json.dumps(config))
        run = subprocess.run(
            [args.tsc, "-p", str(root), "--noEmit", "--strict", "--pretty", "false"],
            cwd=root,
            capture_output=True,
            text=True,
        )

    errors: dict[str, list[str]] = {}
    unexplained = []
    for line in (run.stdout + run.stderr).splitlines():
        found = DIAGNOSTIC.match(line)
        if found and found["file"] in cases and found["code"] not in FATAL:
            errors.setdefault(found["file"], []).append(line)
        elif line and not line.startswith(" "):
            unexplained.append(line)
    failures = [f"tsc: {line}" for line in unexplained]
    if run.returncode not in (0, 1, 2):
        failures.append(f"tsc exited {run.returncode}")
    for file, (what, must_pass) in cases.items():
        if must_pass and file in errors:
            failures += [f"{what}: {line.split(': ', 1)[1]}" for line in errors[file]]
        elif not must_pass and file not in errors:
            failures.append(f"{what}: accepted, but it must be refused by {sdk}")
    broken_replies = sum(1 for what, _ in cases.values() if what.startswith("self-test reply "))
    mutants.report(f"tsc --strict {sdk}", len(args.fixtures), len(args.must_fail), len(broken) + broken_replies, failures)


if __name__ == "__main__":
    main()
