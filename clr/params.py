"""Declared parameters of a policy (and, in `workers`, of data sets, models, optimizers).

One declaration serves validation, the API's catalog and the docs, so they list the same
names. Range checks that depend on the meaning of a value (``base_lr > 0``) stay with the
function that uses it; this module checks names, presence, types and choices.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

ParamType = Literal["float", "int", "str", "bool"]
# Where a runner may take a value from when the user leaves it out or writes "auto".
ParamSource = Literal["bounds", "budget"] | None


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Param:
    """One named parameter: its type, default (or REQUIRED), allowed choices and help."""

    name: str
    type: ParamType
    default: Any = REQUIRED
    help: str = ""
    choices: tuple[Any, ...] | None = None
    # Largest value a number may take: what one study may ask of a machine (widths, sizes).
    maximum: float | None = None
    # "bounds": may be "auto", filled from the range test's bounds (base_lr, max_lr, lr).
    # "budget": filled with the trial's iteration budget when left out (total_iterations).
    source: ParamSource = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for catalogs and docs."""
        return {
            "name": self.name,
            "type": self.type,
            "required": self.required,
            "default": None if self.required else self.default,
            "choices": list(self.choices) if self.choices is not None else None,
            "maximum": self.maximum,
            "auto": self.source == "bounds",
            "help": self.help,
        }


class Registered:
    """What every registry entry (policy, data set, model, optimizer) shows the catalog."""

    name: str
    summary: str
    params: tuple[Param, ...]

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for the API's catalog and the docs."""
        return {
            "name": self.name,
            "summary": self.summary,
            "params": [p.describe() for p in self.params],
        }


def check_value(owner: str, param: Param, value: Any) -> Any:
    """Return `value` converted to the parameter's type, or raise ValueError naming it."""
    where = f"{owner}.{param.name}"
    if param.type == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
        return value
    if param.type in ("float", "int"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{where} must be a finite number, got {value!r}")
        if param.type == "int":
            if float(value) != int(value):
                raise ValueError(f"{where} must be a whole number, got {value!r}")
            value = int(value)
        else:
            value = float(value)
        if param.maximum is not None and value > param.maximum:
            raise ValueError(f"{where} is {value}, above the limit of {param.maximum}")
    elif param.type == "str" and not isinstance(value, str):
        raise ValueError(f"{where} must be a string, got {value!r}")
    if param.choices is not None and value not in param.choices:
        allowed = ", ".join(repr(c) for c in param.choices)
        raise ValueError(f"{where} must be one of {allowed}, got {value!r}")
    return value


def check_params(
    owner: str,
    declared: tuple[Param, ...],
    given: Mapping[str, Any],
    *,
    allow_missing: bool = False,
) -> dict[str, Any]:
    """Check `given` against `declared`; return it complete with defaults.

    Unknown names are refused with the list of known ones. With `allow_missing`, required
    parameters may be absent (a runner fills them later, e.g. from the range test).
    """
    known = {p.name: p for p in declared}
    unknown = sorted(set(given) - set(known))
    if unknown:
        allowed = ", ".join(known) or "none"
        raise ValueError(f"{owner}: unknown parameter {unknown[0]!r}; allowed: {allowed}")
    out: dict[str, Any] = {}
    for p in declared:
        if p.name in given:
            out[p.name] = check_value(owner, p, given[p.name])
        elif not p.required:
            out[p.name] = p.default
        elif not allow_missing:
            raise ValueError(f"{owner}.{p.name} is required")
    return out
