"""The checked-in JSON Schemas match the models (drift test)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from contracts import EVENT_TYPES
from contracts.examples import EXAMPLE_EVENT_DATA
from contracts.export import SCHEMA_DIR, drift, main, render_schemas, write

EXPECTED_FILES = sorted([*(f"{t}.v1.json" for t in EVENT_TYPES), "EventEnvelope.v1.json"])


def test_checked_in_schemas_match_the_models() -> None:
    assert drift() == [], "run `python -m contracts.export` and commit contracts/schemas"


def test_every_event_type_and_the_envelope_have_a_schema() -> None:
    assert sorted(render_schemas()) == EXPECTED_FILES
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.json")) == EXPECTED_FILES


@pytest.mark.parametrize("name", EXPECTED_FILES)
def test_schema_files_are_canonical_json(name: str) -> None:
    text = (SCHEMA_DIR / name).read_text(encoding="utf-8")
    schema = json.loads(text)
    assert text == json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith(f":{name.removesuffix('.v1.json')}:v1")
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize("type_", sorted(EVENT_TYPES))
def test_schema_describes_exactly_the_model_fields(type_: str) -> None:
    model = EVENT_TYPES[type_]
    schema = json.loads((SCHEMA_DIR / f"{type_}.v1.json").read_text(encoding="utf-8"))
    assert set(schema["properties"]) == set(model.model_fields)
    required = {n for n, f in model.model_fields.items() if f.is_required()}
    assert set(schema.get("required", [])) == required


def _check_patterns(schema: dict[str, Any], value: Any, path: str) -> None:
    """Check every `pattern` the example meets (a small subset of JSON Schema)."""
    if "pattern" in schema and isinstance(value, str):
        assert re.search(schema["pattern"], value), f"{path}={value!r} !~ {schema['pattern']}"
    if isinstance(value, dict):
        for key, item in value.items():
            sub = schema.get("properties", {}).get(key)
            for pattern, pattern_schema in schema.get("patternProperties", {}).items():
                assert re.search(pattern, key), f"{path}.{key}"
                sub = pattern_schema
            if sub is not None:
                _check_patterns(sub, item, f"{path}.{key}")


@pytest.mark.parametrize("type_", sorted(EVENT_TYPES))
def test_examples_meet_the_schema_patterns(type_: str) -> None:
    schema = json.loads((SCHEMA_DIR / f"{type_}.v1.json").read_text(encoding="utf-8"))
    _check_patterns(schema, EXAMPLE_EVENT_DATA[type_], type_)


def test_decimals_are_strings_in_the_schema() -> None:
    schema = json.loads((SCHEMA_DIR / "CarbonAssetAcquired.v1.json").read_text(encoding="utf-8"))
    quantity = schema["properties"]["quantity_t"]
    assert quantity["type"] == "string"
    assert not re.search(quantity["pattern"], "0")
    assert not re.search(quantity["pattern"], "0.000")
    assert not re.search(quantity["pattern"], "1.1234567")
    assert re.search(quantity["pattern"], "0.000001")


def test_check_passes_on_a_fresh_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dir", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == EXPECTED_FILES
    assert main(["--check", "--dir", str(tmp_path)]) == 0
    assert "up to date" in capsys.readouterr().out


def test_check_reports_missing_drifted_and_extra_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path)
    (tmp_path / "ConsentGranted.v1.json").unlink()
    (tmp_path / "CreditsRetired.v1.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "Obsolete.v1.json").write_text("{}\n", encoding="utf-8")
    assert main(["--check", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "missing: ConsentGranted.v1.json" in err
    assert "drifted: CreditsRetired.v1.json" in err
    assert "extra: Obsolete.v1.json" in err
    # Writing repairs all three.
    assert main(["--dir", str(tmp_path)]) == 0
    assert drift(tmp_path) == []
