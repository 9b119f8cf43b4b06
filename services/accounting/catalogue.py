"""The versioned emission-factor catalogue: YAML files under ``data/``, validated at start.

Every factor carries its source (standard or announcement, table, edition). A file declares one kind
and one edition; entries may override the file's source, units, year or region. The manifest
(``catalogue.yaml``) lists every edition of every kind, which one is the default, and the request
field that selects among them, so that one calculation never mixes two editions of a kind.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from contracts import Gas

DATA_DIR = Path(__file__).parent / "data"
MANIFEST = "catalogue.yaml"

Kind = Literal[
    "fuel", "gwp", "grid", "grid_baseline", "heat", "process", "constant", "combustion_ef", "power_benefit", "pollutant"
]
KINDS: tuple[str, ...] = Kind.__args__  # type: ignore[attr-defined]

# Values each kind must define (process entries either a factor or the oxide-method molar masses).
REQUIRED_VALUES: dict[str, tuple[frozenset[str], ...]] = {
    "fuel": (frozenset({"ncv", "carbon_content", "oxidation_rate"}),),
    "gwp": (frozenset({"value"}),),
    "grid": (frozenset({"value"}),),
    "grid_baseline": (frozenset({"om", "bm"}),),
    "heat": (frozenset({"value"}),),
    "process": (frozenset({"value"}), frozenset({"co2", "cao", "mgo"})),
    "combustion_ef": (frozenset({"co2", "ch4", "n2o"}),),
}
_DECIMAL_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?")


class CatalogueError(ValueError):
    """A data file breaks the catalogue's rules: the service refuses to start."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(Strict):
    standard: str = Field(min_length=3)
    table: str = Field(min_length=3)
    edition: str = Field(min_length=1)
    publisher: str | None = None

    def citation(self) -> str:
        return f"{self.standard}, {self.table} (edition {self.edition})"


class Edition(Strict):
    id: str
    kind: Kind
    title: str
    default: bool = False
    selected_by: Literal["factor_edition", "gwp"] | None = None


def _decimal(value: Any) -> Decimal:
    # Floats are refused: a YAML float has already lost the printed digits.
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError(f"write {value!r} as a quoted decimal string")
    text = str(value).strip()
    if not _DECIMAL_RE.fullmatch(text):
        raise ValueError(f"{value!r} is not a plain non-negative decimal")
    try:
        return Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern excludes it
        raise ValueError(f"{value!r} is not a decimal") from None


class Factor(Strict):
    id: str
    kind: Kind
    edition: str
    key: str
    name: str | None = None
    variant: str | None = None
    gas: Gas | None = None
    region: str | None = None
    year: int | None = Field(default=None, ge=1990, le=2100)
    values: dict[str, Decimal]
    units: dict[str, str]
    provinces: tuple[str, ...] = ()
    source: Source
    note: str | None = None
    uncertain: bool = False

    @field_validator("values", mode="before")
    @classmethod
    def _values(cls, raw: Any) -> dict[str, Decimal]:
        if not isinstance(raw, dict) or not raw:
            raise ValueError("values must be a non-empty mapping")
        return {str(k): _decimal(v) for k, v in raw.items()}

    @model_validator(mode="after")
    def _rules(self) -> Factor:
        required = REQUIRED_VALUES.get(self.kind)
        if required and not any(r <= self.values.keys() for r in required):
            raise ValueError(f"a {self.kind} factor needs values {' or '.join(str(sorted(r)) for r in required)}")
        missing = [k for k in self.values if k not in self.units]
        if missing:
            raise ValueError(f"values without a unit: {missing}")
        if self.uncertain and not self.note:
            raise ValueError("an uncertain factor must say why in its note")
        if self.kind == "fuel":
            if "activity" not in self.units:
                raise ValueError("a fuel needs the unit its activity data is reported in (units.activity)")
            if not Decimal(0) < self.values["oxidation_rate"] <= 1:
                raise ValueError("oxidation_rate is a fraction in (0, 1]")
            if not Decimal(0) < self.values["carbon_content"] < Decimal("0.1"):
                raise ValueError("carbon_content is in tC/GJ (e.g. 0.0153); this looks like another unit")
        if self.kind == "gwp" and self.gas is None:
            raise ValueError("a GWP names the Kyoto gas group of its species (gas)")
        return self

    def value(self, name: str = "value") -> Decimal:
        return self.values[name]

    def public(self) -> dict[str, Any]:
        """The factor as the API shows it: decimals as strings, every field present."""
        return {
            "id": self.id,
            "kind": self.kind,
            "edition": self.edition,
            "key": self.key,
            "name": self.name,
            "variant": self.variant,
            "gas": self.gas.value if self.gas else None,
            "region": self.region,
            "year": self.year,
            "values": {k: format(v, "f") for k, v in self.values.items()},
            "units": dict(self.units),
            "source": self.source.model_dump(),
            "citation": self.source.citation(),
            "note": self.note,
            "uncertain": self.uncertain,
        }


class Catalogue:
    """Lookups over the loaded factors; each raises ``LookupError`` naming what is available."""

    def __init__(self, version: str, editions: list[Edition], factors: list[Factor]) -> None:
        self.version = version
        self.editions = editions
        self.factors = factors
        self._by_id = {f.id: f for f in factors}

    # ---- editions ------------------------------------------------------------------------

    def default_edition(self, kind: str) -> str:
        return next(e.id for e in self.editions if e.kind == kind and e.default)

    def selectable(self, selector: str) -> list[str]:
        return [e.id for e in self.editions if e.selected_by == selector]

    def edition_kind(self, selector: str) -> str:
        return next(e.kind for e in self.editions if e.selected_by == selector)

    # ---- lookups -------------------------------------------------------------------------

    def _of(self, kind: str, edition: str | None = None) -> list[Factor]:
        edition = edition or self.default_edition(kind)
        return [f for f in self.factors if f.kind == kind and f.edition == edition]

    def fuel(self, key: str) -> Factor:
        return self._one(self._of("fuel"), key, "fuel")

    def fuels(self) -> list[str]:
        return sorted({f.key for f in self._of("fuel")})

    def gwp(self, edition: str, species: str) -> Factor:
        return self._one(self._of("gwp", edition), species, "species")

    def species(self, edition: str | None = None) -> list[str]:
        return [f.key for f in self._of("gwp", edition)]

    def heat(self) -> Factor:
        return self._of("heat")[0]

    def constant(self, key: str) -> Factor:
        return self._one(self._of("constant"), key, "constant")

    def process(self, key: str) -> Factor:
        return self._one(self._of("process"), key, "process")

    def processes(self) -> list[str]:
        return sorted(f.key for f in self._of("process") if "value" in f.values)

    def combustion_ef(self, fuel: str, variant: str) -> Factor:
        candidates = [f for f in self._of("combustion_ef") if f.variant == variant]
        return self._one(candidates, fuel, "fuel")

    def combustion_variants(self, fuel: str, prefix: str) -> list[str]:
        return sorted(f.variant or "" for f in self._of("combustion_ef") if f.key == fuel and (f.variant or "").startswith(prefix))

    def grid(self, edition: str, region: str, year: int) -> Factor:
        """The grid factor of ``region`` for ``year``; LookupError says which regions or years exist."""
        factors = self._of("grid", edition)
        for_region = [f for f in factors if f.region == region]
        if not for_region:
            regions = sorted({f.region or "" for f in factors})
            raise LookupError(f"no grid factor for {region!r} in edition {edition}; available: {', '.join(regions)}")
        match = [f for f in for_region if f.year == year]
        if not match:
            years = sorted({f.year for f in for_region if f.year is not None})
            raise LookupError(
                f"no published grid factor for {region!r} in {year} (edition {edition}); years available: "
                f"{', '.join(map(str, years))}"
            )
        return match[0]

    def grid_regions(self, edition: str) -> list[str]:
        return sorted({f.region or "" for f in self._of("grid", edition)})

    def baseline(self, region: str) -> Factor:
        """The OM/BM baseline of a regional grid, or of the regional grid a province belongs to."""
        factors = self._of("grid_baseline")
        for f in factors:
            if f.region == region or region in f.provinces:
                return f
        regions = sorted(f.region or "" for f in factors)
        raise LookupError(f"no baseline factor for {region!r}; regional grids: {', '.join(regions)}")

    def power_benefit(self, key: str, year: int) -> Factor:
        """The CEC figure of ``year``, else the latest earlier one (the caller says so in a warning)."""
        candidates = sorted((f for f in self._of("power_benefit") if f.key == key and f.year is not None),
                            key=lambda f: f.year or 0)
        earlier = [f for f in candidates if (f.year or 0) <= year]
        if not earlier:
            years = ", ".join(str(f.year) for f in candidates)
            raise LookupError(f"no {key} figure for {year} or earlier; years available: {years}")
        return earlier[-1]

    def pollutant(self, key: str) -> Factor:
        return self._one(self._of("pollutant"), key, "pollutant")

    def filter(self, *, kind: str | None = None, fuel: str | None = None, region: str | None = None,
               year: int | None = None, edition: str | None = None, gas: str | None = None) -> list[Factor]:
        out = []
        for f in self.factors:
            if kind and f.kind != kind:
                continue
            if fuel and not (f.kind in ("fuel", "combustion_ef") and f.key == fuel):
                continue
            if region and f.region != region and region not in f.provinces:
                continue
            if year is not None and f.year != year:
                continue
            if edition and f.edition != edition:
                continue
            if gas and (f.gas is None or f.gas.value != gas):
                continue
            out.append(f)
        return out

    @staticmethod
    def _one(factors: Iterable[Factor], key: str, what: str) -> Factor:
        factors = list(factors)
        for f in factors:
            if f.key == key:
                return f
        accepted = ", ".join(sorted({f.key for f in factors}))
        raise LookupError(f"unknown {what} {key!r}; accepted: {accepted}")


# ---- loading ---------------------------------------------------------------------------------

_FILE_KEYS = {"kind", "edition", "year", "region", "source", "units", "uncertain", "note", "entries"}
_INHERITED = ("year", "region", "uncertain", "note")


def load(directory: Path = DATA_DIR) -> Catalogue:
    """Read and validate every data file; CatalogueError names the file and entry at fault."""
    manifest = _read(directory / MANIFEST)
    try:
        editions = [Edition.model_validate(e) for e in manifest.get("editions") or []]
    except ValidationError as exc:
        raise CatalogueError(f"{MANIFEST}: {exc}") from None
    version = str(manifest.get("version") or "")
    if not version:
        raise CatalogueError(f"{MANIFEST}: the catalogue needs a version")
    for kind in {e.kind for e in editions}:
        defaults = [e.id for e in editions if e.kind == kind and e.default]
        if len(defaults) != 1:
            raise CatalogueError(f"{MANIFEST}: kind {kind!r} needs exactly one default edition, has {defaults}")
    declared = {(e.kind, e.id) for e in editions}

    factors: list[Factor] = []
    for path in sorted(directory.glob("*.yaml")):
        if path.name == MANIFEST:
            continue
        factors.extend(_load_file(path, declared))

    seen: dict[str, str] = {}
    for factor in factors:
        if factor.id in seen:
            raise CatalogueError(f"factor id {factor.id!r} is defined twice ({seen[factor.id]})")
        seen[factor.id] = factor.kind
    for kind, edition in declared:
        if not any(f.kind == kind and f.edition == edition for f in factors):
            raise CatalogueError(f"edition {edition!r} of kind {kind!r} is declared but has no factors")
    return Catalogue(version, editions, factors)


def _read(path: Path) -> dict[str, Any]:
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogueError(f"{path.name}: {exc}") from None
    if not isinstance(content, dict):
        raise CatalogueError(f"{path.name}: expected a mapping at the top level")
    return content


def _load_file(path: Path, declared: set[tuple[str, str]]) -> list[Factor]:
    content = _read(path)
    unknown = set(content) - _FILE_KEYS
    if unknown:
        raise CatalogueError(f"{path.name}: unknown top-level keys {sorted(unknown)}")
    kind, edition = content.get("kind"), content.get("edition")
    if (kind, edition) not in declared:
        raise CatalogueError(f"{path.name}: kind {kind!r} edition {edition!r} is not declared in {MANIFEST}")
    out = []
    for index, entry in enumerate(content.get("entries") or []):
        if not isinstance(entry, dict) or "key" not in entry:
            raise CatalogueError(f"{path.name}: entry {index} needs a key")
        data: dict[str, Any] = {"kind": kind, "edition": edition}
        for name in _INHERITED:
            if name in content:
                data[name] = content[name]
        data.update(entry)
        data["units"] = {**(content.get("units") or {}), **(entry.get("units") or {})}
        data.setdefault("source", content.get("source"))
        data["id"] = _factor_id(data)
        try:
            out.append(Factor.model_validate(data))
        except ValidationError as exc:
            raise CatalogueError(f"{path.name}: entry {index} ({entry.get('key')}): {exc}") from None
    if not out:
        raise CatalogueError(f"{path.name}: no entries")
    return out


def _factor_id(data: dict[str, Any]) -> str:
    parts = [str(data["kind"]), str(data["edition"]), str(data["key"])]
    if data.get("variant"):
        parts.append(str(data["variant"]))
    if data.get("region") and data.get("region") != data.get("key"):
        parts.append(str(data["region"]))
    if data.get("year"):
        parts.append(str(data["year"]))
    return "/".join(parts)


@lru_cache(maxsize=1)
def default_catalogue() -> Catalogue:
    return load()
