"""Write or check the JSON Schemas in `contracts/schemas`.

    python -m contracts.export          # (re)write every schema file
    python -m contracts.export --check  # exit 1 when the files drift from the models
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from contracts.envelope import EventEnvelope
from contracts.events import EVENT_TYPES

SCHEMA_DIR = Path(__file__).parent / "schemas"
_DIALECT = "https://json-schema.org/draft/2020-12/schema"
ENVELOPE_SCHEMA_VERSION = 1


def _schema(model: type[BaseModel], name: str, version: int) -> dict[str, Any]:
    schema = model.model_json_schema(mode="validation")
    schema["$schema"] = _DIALECT
    schema["$id"] = f"urn:carbon-account:schema:{name}:v{version}"
    return schema


def render_schemas() -> dict[str, str]:
    """File name -> exact file content, for every schema that should exist."""
    models: list[tuple[str, int, type[BaseModel]]] = [
        (name, model.SCHEMA_VERSION, model) for name, model in EVENT_TYPES.items()
    ]
    models.append(("EventEnvelope", ENVELOPE_SCHEMA_VERSION, EventEnvelope))
    return {
        f"{name}.v{version}.json": json.dumps(
            _schema(model, name, version), indent=2, sort_keys=True, ensure_ascii=False
        )
        + "\n"
        for name, version, model in models
    }


def drift(directory: Path = SCHEMA_DIR) -> list[str]:
    """One line per file that is missing, different or not produced by any model."""
    wanted = render_schemas()
    present = {p.name for p in directory.glob("*.json")} if directory.is_dir() else set()
    problems = []
    for name, content in sorted(wanted.items()):
        if name not in present:
            problems.append(f"missing: {name}")
        elif (directory / name).read_text(encoding="utf-8") != content:
            problems.append(f"drifted: {name}")
    problems += [f"extra: {name}" for name in sorted(present - wanted.keys())]
    return problems


def write(directory: Path = SCHEMA_DIR) -> list[str]:
    """Write every schema and remove stale ones; returns the names written."""
    directory.mkdir(parents=True, exist_ok=True)
    wanted = render_schemas()
    for name, content in wanted.items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != content:
            path.write_text(content, encoding="utf-8")
    for path in directory.glob("*.json"):
        if path.name not in wanted:
            path.unlink()
    return sorted(wanted)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m contracts.export", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report drift instead of writing")
    parser.add_argument("--dir", type=Path, default=SCHEMA_DIR, help="schema directory")
    args = parser.parse_args(argv)
    if args.check:
        problems = drift(args.dir)
        for line in problems:
            print(line, file=sys.stderr)
        if problems:
            print("run `python -m contracts.export` to regenerate the schemas", file=sys.stderr)
            return 1
        print(f"{len(render_schemas())} schemas up to date")
        return 0
    names = write(args.dir)
    print(f"wrote {len(names)} schemas to {args.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
