"""Carbon accounting (SPEC §6 "accounting"): the calculators, the data-quality checks, the events.

Pure: every function takes the factor catalogue and the request and returns numbers with the formula,
factors and sources that produced them. Arithmetic is Decimal throughout; rounding happens only when a
figure is presented (6 decimal places, half up).

Industrial enterprises follow GB/T 32150-2015: E = E_combustion + E_process + E_electricity + E_heat
− E_exported electricity − E_exported heat − R_CO2 recovered. Other organisations (offices, bank
branches, fleets) follow ISO 14064-1 boundaries with IPCC 2006 factors for CO2, CH4 and N2O.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, Strict, ValidationError, WithJsonSchema
from pydantic_core import PydanticCustomError

from carbon.errors import Invalid
from carbon.reference import benchmark_for
from contracts import Gas, period_year
from contracts.errors import field_errors
from contracts.types import NonNegativeDecimal, Unit
from services.accounting.catalogue import Catalogue, Factor
from services.accounting.units import UnitError, convert, normalise

PLACES = Decimal("0.000001")
GJ_PER_MWH = Decimal("3.6")
# A year-on-year change above this share is flagged (settings may override).
DEFAULT_YOY_THRESHOLD = Decimal("0.5")
# Intensities beyond this multiple of the industry range (or below its reciprocal) are "far outside".
FAR_OUTSIDE = Decimal(2)

Organisation = Literal["industrial", "non_industrial"]

METHODOLOGY = {
    "industrial": "GB/T 32150-2015",
    "non_industrial": "ISO 14064-1:2018 with 2006 IPCC Guidelines factors",
}


def present(value: Decimal) -> str:
    """A figure as the API and the events show it: 6 decimal places, rounded half up."""
    return format(value.quantize(PLACES, rounding=ROUND_HALF_UP), "f")


def _num(value: Decimal) -> str:
    """A factor or quantity inside a formula, without exponent notation."""
    return format(normalise(value), "f")


def _q(value: Decimal, unit: str) -> str:
    """A quantity with its unit; a unit that starts with a number is bracketed ("2 [10^4 Nm3]")."""
    return f"{_num(value)} [{unit}]" if unit[:1].isdigit() else f"{_num(value)} {unit}"


# ---- input types ---------------------------------------------------------------------------------


def _measured(value: Any) -> Decimal:
    """A measured parameter: a decimal string (never a float), positive, at most 10 decimal places."""
    if isinstance(value, bool) or isinstance(value, float):
        raise PydanticCustomError("decimal_float", 'send decimals as strings (e.g. "0.0153")')
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str):
        raise PydanticCustomError("decimal_type", 'must be a decimal number written as a string, e.g. "0.0153"')
    text = value.strip()
    if text.startswith("-"):
        raise PydanticCustomError("decimal_negative", "must not be negative")
    try:
        number = Decimal(text)
    except ArithmeticError:
        raise PydanticCustomError("decimal_parsing", f"{value!r} is not a decimal number") from None
    if not number.is_finite() or "e" in text.lower():
        raise PydanticCustomError("decimal_parsing", f"{value!r} is not a plain decimal number")
    if number <= 0:
        raise PydanticCustomError("decimal_positive", "must be greater than zero")
    if -number.as_tuple().exponent > 10:  # type: ignore[operator]
        raise PydanticCustomError("decimal_places", "at most 10 decimal places allowed")
    if number > Decimal("1e9"):
        raise PydanticCustomError("decimal_too_large", "is implausibly large")
    return number


def _fraction(value: Any) -> Decimal:
    number = _measured(value)
    if number > 1:
        raise PydanticCustomError("fraction", "is a fraction between 0 and 1 (e.g. 0.99, not 99)")
    return number


def _fraction_or_zero(value: Any) -> Decimal:
    if value in ("0", 0):
        return Decimal(0)
    return _fraction(value)


_DECIMAL_SCHEMA = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]{1,10})?$"}
_AS_STRING = PlainSerializer(lambda d: format(d, "f"), return_type=str, when_used="json")
Measured = Annotated[Decimal, PlainValidator(_measured), _AS_STRING, WithJsonSchema(_DECIMAL_SCHEMA)]
Fraction = Annotated[Decimal, PlainValidator(_fraction), _AS_STRING,
                     WithJsonSchema({**_DECIMAL_SCHEMA, "description": "a fraction, 0..1"})]
FractionOrZero = Annotated[Decimal, PlainValidator(_fraction_or_zero), _AS_STRING, WithJsonSchema(_DECIMAL_SCHEMA)]
Year = Annotated[int, Strict(), Field(ge=1990, le=2100)]


class _Activity(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    quantity: NonNegativeDecimal
    unit: Unit


class FuelCombustion(_Activity):
    category: Literal["fuel_combustion"]
    fuel: str
    ncv: Measured | None = None
    carbon_content: Measured | None = None
    oxidation_rate: Fraction | None = None


class StationaryCombustion(_Activity):
    category: Literal["stationary_combustion"]
    fuel: str
    ncv: Measured | None = None


class MobileCombustion(_Activity):
    category: Literal["mobile_combustion"]
    fuel: str
    technology: str = "uncontrolled"
    ncv: Measured | None = None


class PurchasedElectricity(_Activity):
    category: Literal["purchased_electricity"]
    grid: str
    year: Year


class ExportedElectricity(_Activity):
    category: Literal["exported_electricity"]
    grid: str
    year: Year


class PurchasedHeat(_Activity):
    category: Literal["purchased_heat"]
    factor: Measured | None = Field(default=None, description="supplier-specific factor in tCO2/GJ")


class ExportedHeat(_Activity):
    category: Literal["exported_heat"]
    factor: Measured | None = None


class Process(_Activity):
    category: Literal["process"]
    process: str
    cao_content: Fraction | None = None
    mgo_content: Fraction | None = None
    cao_non_carbonate: FractionOrZero = Decimal(0)
    mgo_non_carbonate: FractionOrZero = Decimal(0)
    calcination_fraction: Fraction | None = None


class Fugitive(_Activity):
    category: Literal["fugitive"]
    species: str


class Co2Recovery(_Activity):
    category: Literal["co2_recovery"]
    purity: Fraction = Decimal(1)


ACTIVITY_MODELS: dict[str, type[_Activity]] = {
    "fuel_combustion": FuelCombustion,
    "stationary_combustion": StationaryCombustion,
    "mobile_combustion": MobileCombustion,
    "purchased_electricity": PurchasedElectricity,
    "exported_electricity": ExportedElectricity,
    "purchased_heat": PurchasedHeat,
    "exported_heat": ExportedHeat,
    "process": Process,
    "fugitive": Fugitive,
    "co2_recovery": Co2Recovery,
}
CATEGORIES: dict[str, tuple[str, ...]] = {
    "industrial": ("fuel_combustion", "process", "purchased_electricity", "purchased_heat", "fugitive",
                   "exported_electricity", "exported_heat", "co2_recovery"),
    # An office's boiler or canteen gas is stationary combustion; fuel_combustion is read the same way.
    "non_industrial": ("stationary_combustion", "fuel_combustion", "mobile_combustion", "purchased_electricity",
                       "purchased_heat", "fugitive"),
}
DEDUCTIONS = frozenset({"exported_electricity", "exported_heat", "co2_recovery"})


def parse_activities(raw: list[Any], organisation: Organisation) -> list[_Activity]:
    """Each activity validated against its category's model; Invalid names every bad field."""
    parsed, errors = _parse_each(raw, organisation)
    if errors:
        raise Invalid(errors)
    return [a for a in parsed if a is not None]


def _parse_each(raw: list[Any], organisation: Organisation) -> tuple[list[_Activity | None], list[dict[str, str]]]:
    parsed: list[_Activity | None] = []
    errors: list[dict[str, str]] = []
    allowed = CATEGORIES[organisation]
    for index, item in enumerate(raw):
        where = f"activities[{index}]"
        parsed.append(None)
        if not isinstance(item, dict):
            errors.append({"field": where, "message": "must be an object"})
            continue
        category = item.get("category")
        if category not in allowed:
            hint = f" for an {organisation.replace('_', '-')} organisation" if category in ACTIVITY_MODELS else ""
            errors.append({"field": f"{where}.category",
                           "message": f"{category!r} is not accepted{hint}; accepted: {', '.join(allowed)}"})
            continue
        try:
            parsed[-1] = ACTIVITY_MODELS[category].model_validate(item)
        except ValidationError as exc:
            errors.extend(field_errors(exc, prefix=where))
    return parsed, errors


# ---- results -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Line:
    """One result line: a gas from one activity, with the factor, formula and sources behind it."""

    index: int
    activity: dict[str, Any]
    category: str
    scope: int
    gas: Gas
    factor: dict[str, Any]
    formula: str
    tco2e: Decimal
    factor_ids: tuple[str, ...]
    uncertain_ids: tuple[str, ...] = ()
    default_parameters: bool = False  # relies on default (not measured) fuel parameters
    energy_gj: Decimal = Decimal(0)  # final energy this line accounts for (for the energy-mix check)
    energy_kind: Literal["fuel", "electricity", "heat", "none"] = "none"

    @property
    def deduction(self) -> bool:
        return self.category in DEDUCTIONS

    def public(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "activity": self.activity,
            "category": self.category,
            "scope": self.scope,
            "gas": self.gas.value,
            "factor": self.factor,
            "formula": self.formula,
            "tco2e": present(self.tco2e),
        }


@dataclass(frozen=True, slots=True)
class DataWarning:
    code: str
    message: str
    penalised: bool = True

    def public(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(slots=True)
class Calculation:
    organisation: Organisation
    gwp: str
    factor_edition: str
    catalogue_version: str
    lines: list[Line]
    warnings: list[DataWarning] = field(default_factory=list)
    data_quality: int = 3

    @property
    def methodology(self) -> str:
        return f"{METHODOLOGY[self.organisation]}; GWP {self.gwp} 100-year"

    @property
    def total(self) -> Decimal:
        return sum((line.tco2e for line in self.lines), Decimal(0))

    @property
    def gross(self) -> Decimal:
        return sum((line.tco2e for line in self.lines if not line.deduction), Decimal(0))

    @property
    def deductions(self) -> Decimal:
        return -sum((line.tco2e for line in self.lines if line.deduction), Decimal(0))

    def by(self, attribute: str) -> dict[str, str]:
        sums: dict[str, Decimal] = defaultdict(Decimal)
        for line in self.lines:
            key = getattr(line, attribute)
            sums[str(key.value if isinstance(key, Gas) else key)] += line.tco2e
        return {key: present(value) for key, value in sorted(sums.items())}

    def energy(self, kind: str) -> Decimal:
        return sum((line.energy_gj for line in self.lines if line.energy_kind == kind and not line.deduction), Decimal(0))

    def public(self) -> dict[str, Any]:
        return {
            "organisation": self.organisation,
            "methodology": self.methodology,
            "gwp": self.gwp,
            "factor_edition": self.factor_edition,
            "catalogue_version": self.catalogue_version,
            "lines": [line.public() for line in self.lines],
            "total_tco2e": present(self.total),
            "gross_tco2e": present(self.gross),
            "deductions_tco2e": present(self.deductions),
            "by_scope": self.by("scope"),
            "by_gas": self.by("gas"),
            "by_category": self.by("category"),
            "data_quality": self.data_quality,
            "warnings": [w.public() for w in self.warnings],
        }


class _FieldError(Exception):
    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field_name, message


# ---- calculators ---------------------------------------------------------------------------------


def _to(quantity: Decimal, unit: str, target: str, where: str) -> Decimal:
    try:
        return convert(quantity, unit, target)
    except UnitError as exc:
        raise _FieldError(f"{where}.unit", f"{exc}; give the quantity in a unit of {target!r}") from None


def _lookup(call, field_name: str):  # noqa: ANN001 - a zero-argument lambda over the catalogue
    try:
        return call()
    except LookupError as exc:
        raise _FieldError(field_name, str(exc.args[0])) from None


def _co2_ratio(catalogue: Catalogue) -> tuple[Decimal, Decimal]:
    c = catalogue.constant("carbon_to_co2")
    return c.value("co2"), c.value("c")


def _heat_of_fuel(activity: Any, fuel: Factor, where: str, ncv: Decimal) -> tuple[Decimal, Decimal | None, str]:
    """(heat in GJ, activity data in the fuel's unit or None, the formula's AD term)."""
    unit = fuel.units["activity"]
    try:
        ad = convert(activity.quantity, activity.unit, unit)
    except UnitError:
        # Activity data reported as heat already (e.g. metered GJ): no NCV needed.
        try:
            heat = convert(activity.quantity, activity.unit, "GJ")
        except UnitError:
            hint = "; gas volumes are normal cubic metres (Nm3)" if "Nm3" in unit else ""
            raise _FieldError(
                f"{where}.unit",
                f"{activity.unit!r} converts neither to {unit!r} (the unit of {fuel.key}) nor to energy (GJ){hint}",
            ) from None
        return heat, None, f"{_num(heat)} GJ"
    return ad * ncv, ad, _q(ad, unit)


def fuel_combustion(catalogue: Catalogue, activity: FuelCombustion, index: int, where: str) -> list[Line]:
    """GB/T 32150-2015: E = AD × NCV × CC × OF × 44/12, measured NCV/CC/OF overriding the defaults."""
    fuel = _lookup(lambda: catalogue.fuel(activity.fuel), f"{where}.fuel")
    measured = [name for name in ("ncv", "carbon_content", "oxidation_rate") if getattr(activity, name) is not None]
    ncv = activity.ncv or fuel.value("ncv")
    cc = activity.carbon_content or fuel.value("carbon_content")
    of = activity.oxidation_rate or fuel.value("oxidation_rate")
    if activity.carbon_content is not None and activity.carbon_content >= Decimal("0.1"):
        raise _FieldError(f"{where}.carbon_content",
                          f"carbon_content is in tC/GJ (e.g. 0.0153); {activity.carbon_content} looks like tC/TJ")
    co2, c = _co2_ratio(catalogue)
    heat, ad, ad_term = _heat_of_fuel(activity, fuel, where, ncv)
    tco2 = heat * cc * of * co2 / c
    if ad is None:
        formula = f"E = Q × CC × OF × 44/12 = {ad_term} × {_num(cc)} tC/GJ × {_num(of)} × 44/12"
    else:
        formula = (f"E = AD × NCV × CC × OF × 44/12 = {ad_term} × {_num(ncv)} {fuel.units['ncv']} × "
                   f"{_num(cc)} tC/GJ × {_num(of)} × 44/12")
    factor = {
        "ncv": _num(ncv) if ad is not None else None,
        "ncv_unit": fuel.units["ncv"],
        "carbon_content": _num(cc),
        "carbon_content_unit": "tC/GJ",
        "oxidation_rate": _num(of),
        "source": fuel.source.citation(),
        "factor_id": fuel.id,
        "measured": measured,
        "uncertain": fuel.uncertain and len(measured) < 3,
    }
    uses_default = not {"ncv", "carbon_content"} <= set(measured) if ad is not None else "carbon_content" not in measured
    return [Line(index, _echo(activity), "fuel_combustion", 1, Gas.CO2, factor, formula, tco2, (fuel.id,),
                 (fuel.id,) if factor["uncertain"] else (), uses_default, heat, "fuel")]


def ipcc_combustion(catalogue: Catalogue, activity: StationaryCombustion | MobileCombustion | FuelCombustion,
                    gwp_edition: str, index: int, where: str) -> list[Line]:
    """ISO 14064-1 / IPCC 2006: E_g = AD × NCV × EF_g / 10^6 × GWP_g for g in CO2, CH4, N2O."""
    if isinstance(activity, MobileCombustion):
        variant = f"mobile/{activity.technology}"
        category = "mobile_combustion"
    else:
        variant, category = "stationary", "stationary_combustion"
    fuel = _lookup(lambda: catalogue.fuel(activity.fuel), f"{where}.fuel")
    try:
        ef = catalogue.combustion_ef(activity.fuel, variant)
    except LookupError:
        if isinstance(activity, MobileCombustion) and catalogue.combustion_variants(activity.fuel, "mobile/"):
            options = [v.removeprefix("mobile/") for v in catalogue.combustion_variants(activity.fuel, "mobile/")]
            raise _FieldError(f"{where}.technology",
                              f"unknown technology {activity.technology!r} for {activity.fuel}; accepted: {', '.join(options)}") from None
        kind = "mobile" if isinstance(activity, MobileCombustion) else "stationary"
        fuels = sorted({f.key for f in catalogue.filter(kind="combustion_ef") if (f.variant or "").startswith(kind)})
        raise _FieldError(f"{where}.fuel", f"no IPCC 2006 {kind} factors for {activity.fuel!r}; accepted: {', '.join(fuels)}") from None
    if isinstance(activity, FuelCombustion):
        for name in ("carbon_content", "oxidation_rate"):
            if getattr(activity, name) is not None:
                raise _FieldError(f"{where}.{name}", "applies to the GB/T 32150-2015 method (organisation: industrial); "
                                                     "IPCC 2006 factors are per unit heat: give a measured ncv only")
    measured_ncv = getattr(activity, "ncv", None)
    ncv = measured_ncv or fuel.value("ncv")
    heat, ad, ad_term = _heat_of_fuel(activity, fuel, where, ncv)
    lines = []
    for gas, name in ((Gas.CO2, "co2"), (Gas.CH4, "ch4"), (Gas.N2O, "n2o")):
        gwp = catalogue.gwp(gwp_edition, gas.value)
        mass = heat * ef.value(name) / Decimal(1_000_000)
        tco2e = mass * gwp.value()
        ncv_term = f" × {_num(ncv)} {fuel.units['ncv']}" if ad is not None else ""
        formula = (f"E_{gas.value} = AD{' × NCV' if ad is not None else ''} × EF / 10^6 × GWP = {ad_term}{ncv_term} × "
                   f"{_num(ef.value(name))} kg/TJ / 10^6 × {_num(gwp.value())}")
        factor = {
            "ncv": _num(ncv) if ad is not None else None,
            "ncv_unit": fuel.units["ncv"],
            "emission_factor": _num(ef.value(name)),
            "emission_factor_unit": "kg/TJ",
            "gwp": _num(gwp.value()),
            "source": f"NCV: {fuel.source.citation()}; EF: {ef.source.citation()}; GWP: {gwp.source.citation()}",
            "factor_id": ef.id,
            "measured": ["ncv"] if measured_ncv else [],
            "uncertain": fuel.uncertain and not measured_ncv,
        }
        ids = (fuel.id, ef.id, gwp.id)
        lines.append(Line(index, _echo(activity), category, 1, gas, factor, formula, tco2e, ids,
                          (fuel.id,) if factor["uncertain"] else (), True, heat if gas is Gas.CO2 else Decimal(0), "fuel"))
    return lines


def _grid_region(grid: str) -> str:
    """'national', a regional grid key, or a GB/T 2260 code (a city or county takes its province's factor)."""
    grid = grid.strip()
    if len(grid) == 6 and grid.isdigit():
        return grid[:2] + "0000"
    return grid


def grid_factor(catalogue: Catalogue, edition: str, grid: str, year: int, where: str) -> Factor:
    region = _grid_region(grid)
    if region not in catalogue.grid_regions(edition):
        raise _FieldError(f"{where}.grid",
                          f"no grid factor for {grid!r} in edition {edition}; accepted: "
                          f"{', '.join(catalogue.grid_regions(edition))} (or a GB/T 2260 code within a listed province)")
    return _lookup(lambda: catalogue.grid(edition, region, year), f"{where}.year")


def electricity(catalogue: Catalogue, activity: PurchasedElectricity | ExportedElectricity, edition: str,
                index: int, where: str) -> list[Line]:
    """E = AD × EF_grid (purchased: scope 2; exported: deducted per GB/T 32150-2015)."""
    ef = grid_factor(catalogue, edition, activity.grid, activity.year, where)
    mwh = _to(activity.quantity, activity.unit, "MWh", where)
    sign = Decimal(-1) if isinstance(activity, ExportedElectricity) else Decimal(1)
    factor = {"value": _num(ef.value()), "unit": ef.units["value"], "source": ef.source.citation(),
              "region": ef.region, "year": ef.year, "edition": ef.edition, "factor_id": ef.id, "uncertain": ef.uncertain}
    formula = f"E = {'-' if sign < 0 else ''}AD × EF = {_num(mwh)} MWh × {_num(ef.value())} {ef.units['value']}"
    category = "exported_electricity" if sign < 0 else "purchased_electricity"
    return [Line(index, _echo(activity), category, 1 if sign < 0 else 2, Gas.CO2, factor, formula,
                 sign * mwh * ef.value(), (ef.id,), (ef.id,) if ef.uncertain else (), False,
                 mwh * GJ_PER_MWH, "electricity")]


def heat(catalogue: Catalogue, activity: PurchasedHeat | ExportedHeat, index: int, where: str) -> list[Line]:
    """E = AD × EF_heat, the supplier's factor when given, else the guidelines' 0.11 tCO2/GJ."""
    default = catalogue.heat()
    gj = _to(activity.quantity, activity.unit, "GJ", where)
    sign = Decimal(-1) if isinstance(activity, ExportedHeat) else Decimal(1)
    value = activity.factor or default.value()
    source = "supplier-specific factor given in the request" if activity.factor else default.source.citation()
    factor = {"value": _num(value), "unit": "tCO2/GJ", "source": source, "factor_id": None if activity.factor else default.id,
              "uncertain": False}
    formula = f"E = {'-' if sign < 0 else ''}AD × EF = {_num(gj)} GJ × {_num(value)} tCO2/GJ"
    category = "exported_heat" if sign < 0 else "purchased_heat"
    ids = () if activity.factor else (default.id,)
    return [Line(index, _echo(activity), category, 1 if sign < 0 else 2, Gas.CO2, factor, formula,
                 sign * gj * value, ids, (), False, gj, "heat")]


def process(catalogue: Catalogue, activity: Process, index: int, where: str) -> list[Line]:
    """Process CO2: AD × EF; cement clinker by the oxide method when CaO and MgO contents are given."""
    t = _to(activity.quantity, activity.unit, "t", where)
    oxide = activity.cao_content is not None or activity.mgo_content is not None
    if activity.process == "cement_clinker" and oxide:
        if activity.cao_content is None or activity.mgo_content is None:
            missing = "cao_content" if activity.cao_content is None else "mgo_content"
            raise _FieldError(f"{where}.{missing}", "the oxide method needs both cao_content and mgo_content")
        m = catalogue.process("cement_clinker_oxide")
        cao = activity.cao_content - activity.cao_non_carbonate
        mgo = activity.mgo_content - activity.mgo_non_carbonate
        if cao < 0 or mgo < 0:
            field_name = "cao_non_carbonate" if cao < 0 else "mgo_non_carbonate"
            raise _FieldError(f"{where}.{field_name}", "cannot exceed the total oxide content")
        ef = cao * m.value("co2") / m.value("cao") + mgo * m.value("co2") / m.value("mgo")
        formula = (f"E = AD × [(CaO − CaO_nc) × 44/56 + (MgO − MgO_nc) × 44/40] = {_num(t)} t × "
                   f"[({_num(activity.cao_content)} − {_num(activity.cao_non_carbonate)}) × 44/56 + "
                   f"({_num(activity.mgo_content)} − {_num(activity.mgo_non_carbonate)}) × 44/40]")
        factor = {"value": present(ef), "unit": "tCO2/t clinker", "source": m.source.citation(), "factor_id": m.id,
                  "uncertain": False}
        return [Line(index, _echo(activity), "process", 1, Gas.CO2, factor, formula, t * ef, (m.id,))]
    if activity.process == "cement_clinker_oxide":
        raise _FieldError(f"{where}.process", "use process 'cement_clinker' with cao_content and mgo_content")
    f = _lookup(lambda: catalogue.process(activity.process), f"{where}.process")
    if f.key not in catalogue.processes():
        raise _FieldError(f"{where}.process", f"unknown process; accepted: {', '.join(catalogue.processes())}")
    fraction = activity.calcination_fraction
    if fraction is not None and not f.key.endswith(("_calcination", "_use")):
        raise _FieldError(f"{where}.calcination_fraction", "applies only to carbonate decomposition processes")
    ef = f.value() * (fraction if fraction is not None else Decimal(1))
    fraction_term = f" × {_num(fraction)}" if fraction is not None else ""
    formula = f"E = AD × EF{' × F' if fraction is not None else ''} = {_num(t)} t × {_num(f.value())} {f.units['value']}{fraction_term}"
    factor = {"value": _num(f.value()), "unit": f.units["value"], "source": f.source.citation(), "factor_id": f.id,
              "uncertain": f.uncertain}
    return [Line(index, _echo(activity), "process", 1, Gas.CO2, factor, formula, t * ef, (f.id,),
                 (f.id,) if f.uncertain else ())]


def fugitive(catalogue: Catalogue, activity: Fugitive, gwp_edition: str, index: int, where: str) -> list[Line]:
    """Direct release of a greenhouse gas (refrigerant leaks, SF6 from switchgear): E = m × GWP."""
    gwp = _lookup(lambda: catalogue.gwp(gwp_edition, activity.species), f"{where}.species")
    t = _to(activity.quantity, activity.unit, "t", where)
    factor = {"value": _num(gwp.value()), "unit": "tCO2e/t", "species": gwp.key, "source": gwp.source.citation(),
              "factor_id": gwp.id, "uncertain": False}
    formula = f"E = m × GWP = {_num(t)} t {gwp.key} × {_num(gwp.value())}"
    assert gwp.gas is not None
    return [Line(index, _echo(activity), "fugitive", 1, gwp.gas, factor, formula, t * gwp.value(), (gwp.id,))]


def co2_recovery(catalogue: Catalogue, activity: Co2Recovery, index: int, where: str) -> list[Line]:
    """GB/T 32150-2015: R = Q × PUR × 19.77 (Q in 10^4 Nm3), or Q × PUR for a mass of CO2; deducted."""
    density = catalogue.constant("co2_density")
    try:
        volume = convert(activity.quantity, activity.unit, "10^4 Nm3")
    except UnitError:
        mass = _to(activity.quantity, activity.unit, "t", where)
        recovered = mass * activity.purity
        formula = f"R = Q × PUR = {_num(mass)} t × {_num(activity.purity)}"
        factor = {"value": _num(activity.purity), "unit": "fraction (purity)", "source": density.source.citation(),
                  "factor_id": None, "uncertain": False}
        ids: tuple[str, ...] = ()
    else:
        recovered = volume * activity.purity * density.value()
        formula = (f"R = Q × PUR × 19.77 = {_q(volume, '10^4 Nm3')} × {_num(activity.purity)} × "
                   f"{_num(density.value())} t/10^4 Nm3")
        factor = {"value": _num(density.value()), "unit": density.units["value"], "source": density.source.citation(),
                  "factor_id": density.id, "uncertain": False}
        ids = (density.id,)
    return [Line(index, _echo(activity), "co2_recovery", 1, Gas.CO2, factor, formula, -recovered, ids)]


def _echo(activity: _Activity) -> dict[str, Any]:
    # What the client sent, normalised (decimals as strings), without defaults it did not send.
    return activity.model_dump(mode="json", exclude_unset=True)


@dataclass(frozen=True, slots=True)
class CalculationRequest:
    organisation: Organisation
    activities: list[Any]
    gwp: str
    factor_edition: str


def calculate(catalogue: Catalogue, request: CalculationRequest) -> Calculation:
    """Every line of the request, or Invalid naming every field that cannot be calculated."""
    activities, errors = _parse_each(request.activities, request.organisation)
    lines: list[Line] = []
    for index, activity in enumerate(activities):
        if activity is None:
            continue
        where = f"activities[{index}]"
        try:
            lines.extend(_calculate_one(catalogue, request, activity, index, where))
        except _FieldError as exc:
            errors.append({"field": exc.field, "message": exc.message})
    if errors:
        errors.sort(key=lambda e: int(e["field"].split("[", 1)[1].split("]", 1)[0]) if e["field"].startswith("activities[") else -1)
        raise Invalid(errors)
    return Calculation(request.organisation, request.gwp, request.factor_edition, catalogue.version, lines)


def _calculate_one(catalogue: Catalogue, request: CalculationRequest, activity: Any, index: int, where: str) -> list[Line]:
    match activity:
        case FuelCombustion() if request.organisation == "industrial":
            return fuel_combustion(catalogue, activity, index, where)
        case FuelCombustion() | StationaryCombustion() | MobileCombustion():
            return ipcc_combustion(catalogue, activity, request.gwp, index, where)
        case PurchasedElectricity() | ExportedElectricity():
            return electricity(catalogue, activity, request.factor_edition, index, where)
        case PurchasedHeat() | ExportedHeat():
            return heat(catalogue, activity, index, where)
        case Process():
            return process(catalogue, activity, index, where)
        case Fugitive():
            return fugitive(catalogue, activity, request.gwp, index, where)
        case Co2Recovery():
            return co2_recovery(catalogue, activity, index, where)
    raise AssertionError(f"no calculator for {type(activity).__name__}")  # pragma: no cover


# ---- data-quality checks -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Output:
    quantity: Decimal
    unit: str


@dataclass(frozen=True, slots=True)
class Previous:
    """The enterprise's stored result for the comparable earlier period."""

    period: str
    gross_tco2e: Decimal
    calculation_id: str


def previous_period(period: str) -> str:
    """The same period one year earlier: 2024 → 2023, 2024-Q3 → 2023-Q3, 2024-07 → 2023-07 (seasonality)."""
    year = period_year(period)
    return f"{year - 1}{period[4:]}"


def quality_checks(
    result: Calculation,
    *,
    industry: str | None,
    revenue_10k_cny: Decimal | None,
    output: Output | None,
    previous: Previous | None,
    yoy_threshold: Decimal = DEFAULT_YOY_THRESHOLD,
    period: str | None = None,
) -> None:
    """Add warnings for figures that deserve a second look, and set the data quality from them.

    data_quality follows the event contract: 5 is best (measured, verified), 1 worst (estimated).
    It starts at 4 when every fuel parameter was measured, else 3 (defaults), and loses one point for each
    kind of anomaly found; informational warnings do not count.
    """
    warnings: list[DataWarning] = []
    uncertain = sorted({fid for line in result.lines for fid in line.uncertain_ids})
    if uncertain:
        warnings.append(DataWarning(
            "factor_uncertain",
            "these catalogue factors are not yet checked against the published table: "
            f"{', '.join(uncertain)}; measured parameters replace them"))
    if period is not None:
        years = sorted({line.factor["year"] for line in result.lines
                        if line.factor.get("year") is not None and line.factor["year"] != period_year(period)})
        if years:
            warnings.append(DataWarning(
                "grid_factor_year",
                f"the period is {period}; grid factors of {', '.join(map(str, years))} are used (the year each "
                "activity names: the latest published one is the usual choice)", penalised=False))
    gross = result.gross
    benchmark = benchmark_for(industry) if industry else None
    if benchmark is not None:
        warnings.extend(_intensity_warnings(benchmark, gross, revenue_10k_cny, output))
        warnings.extend(_energy_mix_warnings(benchmark, result))
    if previous is not None:
        warnings.extend(_year_on_year(previous, gross, yoy_threshold))
    if any(line.deduction for line in result.lines):
        warnings.append(DataWarning(
            "deductions_not_recorded",
            f"total_tco2e nets {present(result.deductions)} tCO2e of GB/T 32150-2015 deductions (exported energy, "
            "recovered CO2); recorded EmissionRecorded events carry the gross lines, as an event's tonnes are never negative",
            penalised=False))
    base = 3 if any(line.default_parameters for line in result.lines) else 4
    penalties = len({w.code for w in warnings if w.penalised})
    result.warnings = warnings
    result.data_quality = max(1, min(5, base - penalties))


def _intensity_warnings(benchmark, gross: Decimal, revenue: Decimal | None, output: Output | None) -> list[DataWarning]:
    out = []
    if revenue is not None and revenue > 0 and benchmark.revenue_intensity is not None:
        intensity = gross / revenue
        r = benchmark.revenue_intensity
        if intensity > r.high * FAR_OUTSIDE or intensity < r.low / FAR_OUTSIDE:
            out.append(DataWarning(
                "intensity_out_of_range",
                f"{present(intensity)} tCO2e per 10k CNY of revenue is far outside the {benchmark.code} screening "
                f"range {_num(r.low)}-{_num(r.high)} (more than {FAR_OUTSIDE}x beyond it)"))
    if output is not None and output.quantity > 0 and benchmark.output_intensity is not None:
        r = benchmark.output_intensity
        try:
            quantity = convert(output.quantity, output.unit, r.unit or "")
        except UnitError:
            return out + [DataWarning("intensity_not_checked",
                                   f"output in {output.unit!r} does not convert to the benchmark's unit {r.unit!r}",
                                   penalised=False)]
        intensity = gross / quantity
        if intensity > r.high * FAR_OUTSIDE or intensity < r.low / FAR_OUTSIDE:
            out.append(DataWarning(
                "intensity_out_of_range",
                f"{present(intensity)} tCO2e per {r.unit} of output is far outside the {benchmark.code} screening "
                f"range {_num(r.low)}-{_num(r.high)}"))
    return out


def _energy_mix_warnings(benchmark, result: Calculation) -> list[DataWarning]:
    share_range = benchmark.electricity_share
    electricity, fuel, heat_ = result.energy("electricity"), result.energy("fuel"), result.energy("heat")
    total = electricity + fuel + heat_
    if share_range is None or total <= 0:
        return []
    share = electricity / total
    if share_range.contains(share):
        return []
    return [DataWarning(
        "energy_mix_mismatch",
        f"electricity is {present(share * 100)} % of the final energy reported (electricity {present(electricity)} GJ, "
        f"fuels {present(fuel)} GJ, heat {present(heat_)} GJ); {benchmark.code} typically has "
        f"{_num(share_range.low * 100)}-{_num(share_range.high * 100)} %: is an energy source missing or misreported?")]


def _year_on_year(previous: Previous, gross: Decimal, threshold: Decimal) -> list[DataWarning]:
    if previous.gross_tco2e == 0:
        if gross == 0:
            return []
        change_text = "from zero"
    else:
        change = gross / previous.gross_tco2e - 1
        if abs(change) <= threshold:
            return []
        change_text = f"{'+' if change > 0 else ''}{present(change * 100)} %"
    return [DataWarning(
        "year_on_year_jump",
        f"gross emissions {present(gross)} tCO2e changed {change_text} against {previous.period} "
        f"({present(previous.gross_tco2e)} tCO2e, calculation {previous.calculation_id}); the threshold is "
        f"{_num(threshold * 100)} %")]


# ---- events --------------------------------------------------------------------------------------

MAX_REFERENCE = 256


def _reference(text: str) -> str:
    return text if len(text) <= MAX_REFERENCE else text[: MAX_REFERENCE - 1] + "…"


def emission_events(result: Calculation, calculation_id: str, period: str) -> list[dict[str, Any]]:
    """One EmissionRecorded per (scope, category, gas) of the gross lines, in first-appearance order.

    Aggregating per group (not per line) keeps the account's stream at the granularity disclosures and
    ratings read, while the line detail stays retrievable here by calculation_id.
    """
    groups: dict[tuple[int, str, str], list[Line]] = {}
    for line in result.lines:
        if not line.deduction:
            groups.setdefault((line.scope, line.category, line.gas.value), []).append(line)
    events = []
    for (scope, category, gas), lines in groups.items():
        ids: list[str] = []
        for line in lines:
            measured = line.factor.get("measured") or []
            if measured and not line.factor_ids:
                ids.append("measured")
            for fid in line.factor_ids:
                label = f"{fid} (measured: {', '.join(measured)})" if measured and fid.startswith("fuel/") else fid
                if label not in ids:
                    ids.append(label)
            if not line.factor_ids and "request-supplied factor" not in ids:
                ids.append("request-supplied factor")
        events.append({"type": "EmissionRecorded", "data": {
            "calculation_id": calculation_id,
            "period": period,
            "scope": scope,
            "category": category,
            "gas": gas,
            "tco2e": present(sum((line.tco2e for line in lines), Decimal(0))),
            "factor_ref": _reference(f"catalogue {result.catalogue_version}: {'; '.join(ids)}"),
            "methodology": _reference(result.methodology),
            "data_quality": result.data_quality,
        }})
    return events


# ---- environmental benefits ----------------------------------------------------------------------

ProjectType = Literal["renewable_power", "energy_efficiency_retrofit", "coal_to_gas"]
BENEFIT_UNITS = {
    "co2e_reduced_t": "tCO2e",
    "standard_coal_saved_t": "tce",
    "so2_reduced_t": "t",
    "nox_reduced_t": "t",
    "dust_reduced_t": "t",
    "cod_reduced_t": "t",
    "ammonia_nitrogen_reduced_t": "t",
    "water_saved_t": "t",
}
MONITORED = ("so2_reduced_t", "nox_reduced_t", "dust_reduced_t", "cod_reduced_t", "ammonia_nitrogen_reduced_t",
             "water_saved_t")


class _Parameters(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Monitored results (e.g. from a wastewater outlet's online monitoring) replace any estimate.
    so2_reduced_t: NonNegativeDecimal | None = None
    nox_reduced_t: NonNegativeDecimal | None = None
    dust_reduced_t: NonNegativeDecimal | None = None
    cod_reduced_t: NonNegativeDecimal | None = None
    ammonia_nitrogen_reduced_t: NonNegativeDecimal | None = None
    water_saved_t: NonNegativeDecimal | None = None


CoalMethod = Literal["power_supply_coal_rate", "calorific_equivalent"]


class RenewablePower(_Parameters):
    annual_generation_mwh: NonNegativeDecimal = Field(description="net generation supplied to the grid in the period")
    grid: str
    year: Year
    technology: Literal["wind", "solar", "hydro", "biomass", "other"] = "other"
    baseline_method: Literal["grid_average", "combined_margin"] = "grid_average"
    project_emissions_tco2e: NonNegativeDecimal = Decimal(0)
    coal_method: CoalMethod = "power_supply_coal_rate"
    coal_rate_gce_per_kwh: Measured | None = None


class EnergyUse(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    carrier: str = Field(description="a fuel of the catalogue, 'electricity' or 'heat'")
    quantity: NonNegativeDecimal
    unit: Unit


class EnergyEfficiencyRetrofit(_Parameters):
    baseline_energy: list[EnergyUse] = Field(min_length=1, max_length=50)
    project_energy: list[EnergyUse] = Field(max_length=50)
    grid: str | None = None
    year: Year | None = None
    coal_method: CoalMethod = "calorific_equivalent"
    coal_rate_gce_per_kwh: Measured | None = None


class CoalToGas(_Parameters):
    coal_fuel: str = "raw_coal"
    coal_quantity: NonNegativeDecimal
    coal_unit: Unit = "t"
    gas_quantity: NonNegativeDecimal
    gas_unit: Unit = "10^4 Nm3"
    coal_sulphur_content: Fraction | None = None
    desulphurisation_efficiency: FractionOrZero = Decimal(0)


PARAMETER_MODELS: dict[str, type[_Parameters]] = {
    "renewable_power": RenewablePower,
    "energy_efficiency_retrofit": EnergyEfficiencyRetrofit,
    "coal_to_gas": CoalToGas,
}


@dataclass(slots=True)
class Benefit:
    value: Decimal
    unit: str
    method: str
    source: str

    def public(self) -> dict[str, str]:
        return {"value": present(self.value), "unit": self.unit, "method": self.method, "source": self.source}


@dataclass(slots=True)
class BenefitResult:
    project_type: str
    methodology: str
    baseline_method: str
    baseline: Decimal
    project: Decimal
    lines: list[dict[str, Any]]
    benefits: dict[str, Benefit]
    warnings: list[DataWarning]
    catalogue_version: str
    factor_edition: str

    @property
    def reduction(self) -> Decimal:
        return self.baseline - self.project

    def public(self) -> dict[str, Any]:
        baseline, project = present(self.baseline), present(self.project)
        return {
            "project_type": self.project_type,
            "methodology": self.methodology,
            "baseline_method": self.baseline_method,
            "factor_edition": self.factor_edition,
            "catalogue_version": self.catalogue_version,
            "baseline_tco2e": baseline,
            "project_tco2e": project,
            # From the presented figures, so that reduction = baseline − project holds exactly on the wire.
            "reduction_tco2e": present(Decimal(baseline) - Decimal(project)),
            "benefits": {name: b.public() for name, b in self.benefits.items()},
            "lines": self.lines,
            "warnings": [w.public() for w in self.warnings],
        }

    def event(self, project_id: str, period: str) -> dict[str, Any]:
        data = self.public()
        benefits = {name: b["value"] for name, b in data["benefits"].items() if not b["value"].startswith("-")}
        return {"type": "ReductionRecorded", "data": {
            "project_id": project_id,
            "period": period,
            "methodology": _reference(f"{self.methodology}; baseline: {self.baseline_method}"),
            "baseline_tco2e": data["baseline_tco2e"],
            "project_tco2e": data["project_tco2e"],
            "reduction_tco2e": data["reduction_tco2e"],
            "benefits": benefits,
        }}


def parse_parameters(project_type: str, raw: dict[str, Any]) -> _Parameters:
    model = PARAMETER_MODELS[project_type]
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise Invalid(field_errors(exc, prefix="parameters")) from None


def measure_benefits(catalogue: Catalogue, project_type: str, raw_parameters: dict[str, Any],
                     factor_edition: str) -> BenefitResult:
    """Environmental benefits of a green project; Invalid names the parameter at fault."""
    parameters = parse_parameters(project_type, raw_parameters)
    try:
        match parameters:
            case RenewablePower():
                result = _renewable_power(catalogue, parameters, factor_edition)
            case EnergyEfficiencyRetrofit():
                result = _efficiency(catalogue, parameters, factor_edition)
            case CoalToGas():
                result = _coal_to_gas(catalogue, parameters, factor_edition)
            case _:  # pragma: no cover
                raise AssertionError(project_type)
    except _FieldError as exc:
        raise Invalid([{"field": exc.field, "message": exc.message}]) from None
    if result.reduction < 0:
        raise Invalid([{"field": "parameters", "message":
                        f"project emissions ({present(result.project)} tCO2e) exceed the baseline "
                        f"({present(result.baseline)} tCO2e): there is no reduction to measure"}])
    # From the presented figures, like reduction_tco2e, so the two never differ in the last digit.
    reduced = Decimal(present(result.baseline)) - Decimal(present(result.project))
    result.benefits = {"co2e_reduced_t": Benefit(reduced, "tCO2e", "baseline − project emissions",
                                                 result.methodology), **result.benefits}
    for name in MONITORED:
        value = getattr(parameters, name)
        if value is not None:
            result.benefits[name] = Benefit(value, BENEFIT_UNITS[name], "monitored value given in the request",
                                            "project monitoring data")
    for benefit in result.benefits.values():
        if benefit.value < 0:
            result.warnings.append(DataWarning("negative_benefit", f"{benefit.method} is negative; it is reported here "
                                                                "but not recorded", penalised=False))
    uncertain = sorted({line["factor"].get("factor_id") for line in result.lines
                        if line["factor"].get("uncertain") and line["factor"].get("factor_id")})
    if uncertain:
        result.warnings.insert(0, DataWarning("factor_uncertain", "these catalogue factors are not yet checked against "
                                                               f"the published table: {', '.join(uncertain)}"))
    return result


def _coal_saved_from_electricity(catalogue: Catalogue, mwh: Decimal, method: CoalMethod, rate: Decimal | None,
                                 year: int | None) -> tuple[Decimal, str, str, list[DataWarning], Factor | None]:
    """Standard coal equivalent of electricity: by the thermal fleet's supply rate, or by its heat (3.6 GJ/MWh)."""
    if method == "calorific_equivalent":
        tce = convert(mwh, "MWh", "tce")
        return tce, f"{_num(mwh)} MWh × 3.6 GJ/MWh / 29.3076 GJ/tce", \
            "GB/T 2589-2020 (1 kgce = 29 307.6 kJ; electricity at its calorific value)", [], None
    if rate is not None:
        return mwh * rate / 1000, f"{_num(mwh)} MWh × {_num(rate)} gce/kWh / 1000", \
            "coal consumption rate given in the request", [], None
    f = _lookup(lambda: catalogue.power_benefit("coal_rate", year or 0), "parameters.year")
    warnings = []
    if f.year != year:
        warnings.append(DataWarning("factor_year_substituted",
                                 f"no {year} coal consumption rate in the catalogue; the {f.year} figure is used",
                                 penalised=False))
    return mwh * f.value() / 1000, f"{_num(mwh)} MWh × {_num(f.value())} gce/kWh / 1000", f.source.citation(), warnings, f


def _renewable_power(catalogue: Catalogue, p: RenewablePower, edition: str) -> BenefitResult:
    mwh = p.annual_generation_mwh
    lines: list[dict[str, Any]] = []
    warnings: list[DataWarning] = []
    if p.baseline_method == "grid_average":
        ef = grid_factor(catalogue, edition, p.grid, p.year, "parameters")
        value = ef.value()
        factor = {"value": _num(value), "unit": ef.units["value"], "source": ef.source.citation(), "factor_id": ef.id,
                  "uncertain": ef.uncertain}
        baseline_method = (f"grid_average: the generation displaces grid electricity at the {ef.year} average factor of "
                           f"{ef.region} ({_num(value)} tCO2/MWh, edition {ef.edition})")
        formula = f"BE = EG × EF_grid = {_num(mwh)} MWh × {_num(value)} tCO2/MWh"
    else:
        region = _grid_region(p.grid)
        bl = _lookup(lambda: catalogue.baseline(region), "parameters.grid")
        w_om, w_bm = (Decimal("0.75"), Decimal("0.25")) if p.technology in ("wind", "solar") else (Decimal("0.5"), Decimal("0.5"))
        value = w_om * bl.value("om") + w_bm * bl.value("bm")
        factor = {"om": _num(bl.value("om")), "bm": _num(bl.value("bm")), "w_om": _num(w_om), "w_bm": _num(w_bm),
                  "value": _num(value), "unit": "tCO2/MWh", "source": bl.source.citation(), "factor_id": bl.id,
                  "uncertain": bl.uncertain}
        baseline_method = (f"combined_margin: CM = {_num(w_om)} × OM + {_num(w_bm)} × BM of the {bl.region} regional grid "
                           f"({bl.edition}); weights per CDM Tool 07 for {p.technology}")
        formula = f"BE = EG × (w_OM × OM + w_BM × BM) = {_num(mwh)} MWh × ({_num(w_om)} × {_num(bl.value('om'))} + {_num(w_bm)} × {_num(bl.value('bm'))})"
    baseline = mwh * value
    lines.append({"component": "baseline", "formula": formula, "factor": factor, "tco2e": present(baseline)})
    lines.append({"component": "project", "formula": "PE = project emissions given in the request",
                  "factor": {}, "tco2e": present(p.project_emissions_tco2e)})
    tce, coal_formula, coal_source, coal_warnings, coal_factor = _coal_saved_from_electricity(
        catalogue, mwh, p.coal_method, p.coal_rate_gce_per_kwh, p.year)
    warnings.extend(coal_warnings)
    if coal_factor is not None:
        lines.append({"component": "standard_coal", "formula": coal_formula, "tco2e": None,
                      "factor": {"value": _num(coal_factor.value()), "unit": coal_factor.units["value"],
                                 "source": coal_source, "factor_id": coal_factor.id, "uncertain": coal_factor.uncertain}})
    benefits = {"standard_coal_saved_t": Benefit(tce, "tce", f"{p.coal_method}: {coal_formula}", coal_source)}
    pollutants = _lookup(lambda: catalogue.power_benefit("pollutants", p.year), "parameters.year")
    if pollutants.year != p.year:
        warnings.append(DataWarning("factor_year_substituted",
                                 f"no {p.year} thermal-power pollutant intensities in the catalogue; the {pollutants.year} "
                                 "figures are used", penalised=False))
    lines.append({"component": "pollutants", "formula": "reduced = EG × intensity (g/kWh) / 1000", "tco2e": None,
                  "factor": {"values": {k: _num(v) for k, v in pollutants.values.items()}, "unit": "g/kWh",
                             "source": pollutants.source.citation(), "factor_id": pollutants.id,
                             "uncertain": pollutants.uncertain}})
    for gas, name in (("so2", "so2_reduced_t"), ("nox", "nox_reduced_t"), ("dust", "dust_reduced_t")):
        intensity = pollutants.value(gas)
        benefits[name] = Benefit(mwh * intensity / 1000,
                                 "t", f"EG × thermal-power {gas.upper()} intensity = {_num(mwh)} MWh × {_num(intensity)} g/kWh / 1000",
                                 pollutants.source.citation())
    return BenefitResult("renewable_power", "grid-connected renewable generation displacing grid electricity",
                         baseline_method, baseline, p.project_emissions_tco2e, lines, benefits, warnings,
                         catalogue.version, edition)


def _energy_use(catalogue: Catalogue, use: EnergyUse, where: str, grid: str | None, year: int | None,
                edition: str, coal_method: CoalMethod, coal_rate: Decimal | None) -> tuple[Decimal, Decimal, dict[str, Any], list[DataWarning]]:
    """(tCO2, tce, line, warnings) of one energy use, by the same formulas as the calculations."""
    if use.carrier == "electricity":
        if grid is None or year is None:
            raise _FieldError("parameters.grid" if grid is None else "parameters.year",
                              "electricity needs the project's grid and year")
        line = electricity(catalogue, PurchasedElectricity(category="purchased_electricity", quantity=use.quantity,
                                                           unit=use.unit, grid=grid, year=year), edition, 0, where)[0]
        mwh = line.energy_gj / GJ_PER_MWH
        tce, _, _, warnings, _ = _coal_saved_from_electricity(catalogue, mwh, coal_method, coal_rate, year)
    elif use.carrier == "heat":
        line = heat(catalogue, PurchasedHeat(category="purchased_heat", quantity=use.quantity, unit=use.unit), 0, where)[0]
        tce, warnings = convert(line.energy_gj, "GJ", "tce"), []
    else:
        if use.carrier not in catalogue.fuels():
            raise _FieldError(f"{where}.carrier", f"unknown carrier {use.carrier!r}; accepted: electricity, heat, "
                                                   f"{', '.join(catalogue.fuels())}")
        line = fuel_combustion(catalogue, FuelCombustion(category="fuel_combustion", fuel=use.carrier,
                                                         quantity=use.quantity, unit=use.unit), 0, where)[0]
        tce, warnings = convert(line.energy_gj, "GJ", "tce"), []
    return line.tco2e, tce, {"activity": use.model_dump(mode="json"), "formula": line.formula, "factor": line.factor,
                             "tco2e": present(line.tco2e), "tce": present(tce)}, warnings


def _efficiency(catalogue: Catalogue, p: EnergyEfficiencyRetrofit, edition: str) -> BenefitResult:
    lines, warnings = [], []
    totals = {}
    for component in ("baseline_energy", "project_energy"):
        co2, tce = Decimal(0), Decimal(0)
        for i, use in enumerate(getattr(p, component)):
            c, t, line, w = _energy_use(catalogue, use, f"parameters.{component}[{i}]", p.grid, p.year, edition,
                                        p.coal_method, p.coal_rate_gce_per_kwh)
            co2, tce = co2 + c, tce + t
            lines.append({"component": component.removesuffix("_energy"), **line})
            warnings.extend(w)
        totals[component] = (co2, tce)
    (b_co2, b_tce), (p_co2, p_tce) = totals["baseline_energy"], totals["project_energy"]
    benefits = {"standard_coal_saved_t": Benefit(
        b_tce - p_tce, "tce", f"{p.coal_method}: baseline {present(b_tce)} tce − project {present(p_tce)} tce",
        "GB/T 2589-2020 (1 kgce = 29 307.6 kJ); fuels at their GB/T 32150-2015 NCV")}
    return BenefitResult("energy_efficiency_retrofit", "measured energy use before and after the retrofit (GB/T 32150-2015 "
                         "factors)", "before/after: the baseline is the metered energy use of the period before the "
                         "retrofit, normalised by the enterprise to the project period's output", b_co2, p_co2, lines,
                         benefits, _dedupe(warnings), catalogue.version, edition)


def _coal_to_gas(catalogue: Catalogue, p: CoalToGas, edition: str) -> BenefitResult:
    coal = fuel_combustion(catalogue, FuelCombustion(category="fuel_combustion", fuel=p.coal_fuel, quantity=p.coal_quantity,
                                                     unit=p.coal_unit), 0, "parameters.coal")[0]
    gas = fuel_combustion(catalogue, FuelCombustion(category="fuel_combustion", fuel="natural_gas", quantity=p.gas_quantity,
                                                    unit=p.gas_unit), 0, "parameters.gas")[0]
    lines = [
        {"component": "baseline", "formula": coal.formula, "factor": coal.factor, "tco2e": present(coal.tco2e)},
        {"component": "project", "formula": gas.formula, "factor": gas.factor, "tco2e": present(gas.tco2e)},
    ]
    coal_tce, gas_tce = convert(coal.energy_gj, "GJ", "tce"), convert(gas.energy_gj, "GJ", "tce")
    benefits = {"standard_coal_saved_t": Benefit(
        coal_tce - gas_tce, "tce", f"coal {present(coal_tce)} tce − gas {present(gas_tce)} tce (heat at NCV / 29.3076 GJ/tce)",
        "GB/T 2589-2020 (1 kgce = 29 307.6 kJ); NCV from GB/T 32150-2015 Table A.1")}
    warnings: list[DataWarning] = []
    if p.coal_sulphur_content is not None:
        coal_t = _to(p.coal_quantity, p.coal_unit, "t", "parameters.coal")
        cs = catalogue.pollutant("coal_so2")
        gs = catalogue.pollutant("natural_gas_so2")
        baseline_so2 = coal_t * p.coal_sulphur_content * cs.value("so2_per_s") * cs.value("conversion") * (1 - p.desulphurisation_efficiency)
        nm3 = _to(p.gas_quantity, p.gas_unit, "Nm3", "parameters.gas")
        project_so2 = nm3 * gs.value("sulphur") * gs.value("so2_per_s") / Decimal(1_000_000_000)
        benefits["so2_reduced_t"] = Benefit(
            baseline_so2 - project_so2, "t",
            f"coal {_num(coal_t)} t × S {_num(p.coal_sulphur_content)} × 2 × {_num(cs.value('conversion'))} × "
            f"(1 − {_num(p.desulphurisation_efficiency)}) − gas {_num(nm3)} Nm3 × {_num(gs.value('sulphur'))} mg/Nm3 × 2 / 10^9 "
            "(class-1 gas upper bound)",
            f"{cs.source.citation()}; {gs.source.citation()}")
        lines.append({"component": "so2", "formula": benefits["so2_reduced_t"].method, "tco2e": None,
                      "factor": {"factor_id": cs.id, "uncertain": cs.uncertain, "source": cs.source.citation()}})
    elif p.so2_reduced_t is None:
        warnings.append(DataWarning("benefit_not_estimated", "SO2 is not estimated: give coal_sulphur_content, or the "
                                 "monitored so2_reduced_t", penalised=False))
    if p.nox_reduced_t is None:
        warnings.append(DataWarning("benefit_not_estimated", "NOx is not estimated: it depends on the boilers' combustion "
                                 "and abatement; give the monitored nox_reduced_t", penalised=False))
    return BenefitResult("coal_to_gas", "fuel switch from coal to natural gas (GB/T 32150-2015 factors for both fuels)",
                         f"the coal the gas replaces: {_num(p.coal_quantity)} {p.coal_unit} of {p.coal_fuel} in the period",
                         coal.tco2e, gas.tco2e, lines, benefits, warnings, catalogue.version, edition)


def _dedupe(warnings: list[DataWarning]) -> list[DataWarning]:
    seen, out = set(), []
    for w in warnings:
        if (w.code, w.message) not in seen:
            seen.add((w.code, w.message))
            out.append(w)
    return out
