"""Command-line options for every `Config` field, generated from the field's declaration.

`charrnn train`, `orchestrator submit` and `orchestrator sweep` all take their hyperparameter
options from `config_options`, and sweep files take their value types from `field_kinds`: a new
`hp(...)` line in `Config` is a new option in all three and a new key in sweep files, with its
type, default, help, bounds, choices and aliases.

Text becomes a typed value in one place, `coerce` (int, float, or one of the choices); the
values are checked once, by `Config` itself, when the commands build it. An option not given
stays None, so Config's default (or a sweep file's value) applies.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from .config import Config, flag
from .errors import ConfigError

Value = int | float | bool | str | None
"""A field's typed value (`coerce`): None when an optional field is not given."""
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Field:
    """What a command line needs to know of one Config field."""

    name: str
    base: type  # int, float or str
    optional: bool  # None allowed (e.g. iterations: int | None)
    default: object
    help: str
    low: float | None
    high: float | None
    low_open: bool
    choices: tuple[str, ...] | None
    aliases: tuple[str, ...]

    @property
    def flag(self) -> str:
        return "--" + flag(self.name)


def fields(cls: type = Config) -> list[Field]:
    """Every field of a Config class, in declaration order."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        args = typing.get_args(kind)
        base = next((a for a in args if a is not type(None)), kind)
        m = f.metadata
        out.append(
            Field(
                f.name,
                base,
                type(None) in args,
                f.default,
                m.get("help", ""),
                m.get("low"),
                m.get("high"),
                m.get("low_open", False),
                m.get("choices"),
                tuple(m.get("aliases", ())),
            )
        )
    return out


def coerce(field: Field, value: Any) -> Value:  # anything: int() and float() reject by raising
    """The field's typed value from text (an option, a YAML string) or a number (JSON, YAML);
    ConfigError naming the option when it is not of the field's type. Bounds are Config's."""
    if value is None and field.optional:
        return None
    if isinstance(value, str):
        value = value.strip()
    if field.base is bool:
        return _boolean(field, value)
    try:
        if field.base is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError
                return int(value)
            return int(value)
        if field.base is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
    except (TypeError, ValueError):
        what = "an integer" if field.base is int else "a number"
        raise ConfigError(f"bad hyperparameter {field.flag}: {value!r} is not {what}") from None
    if not isinstance(value, str):
        raise ConfigError(f"bad hyperparameter {field.flag}: {value!r} is not text")
    if field.choices and value not in field.choices:
        raise ConfigError(
            f"bad hyperparameter {field.flag}: {value!r} is not one of "
            f"{', '.join(field.choices or ())}"
        )
    return value


_BOOLEANS = {
    "true": True,
    "yes": True,
    "on": True,
    "1": True,
    "false": False,
    "no": False,
    "off": False,
    "0": False,
}


def _boolean(field: Field, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _BOOLEANS:
        return _BOOLEANS[value.lower()]
    raise ConfigError(f"bad hyperparameter {field.flag}: {value!r} is not true or false")


def describe(field: Field) -> str:
    """The range a value must lie in, as help text: '>= 1, <= 8192', '> 0'."""
    parts = []
    if field.low is not None:
        parts.append(f"{'>' if field.low_open else '>='} {field.low:g}")
    if field.high is not None:
        parts.append(f"<= {field.high:g}")
    return ", ".join(parts)


if typing.TYPE_CHECKING:
    # click.ParamType is generic (value, input) from click 8.4 only, and a subscript in the
    # bases is evaluated at run time: the older clicks the dependency allows would fail on it
    _ParamType = click.ParamType[Value | list[Value], Value | list[Value]]
else:
    _ParamType = click.ParamType


class FieldType(_ParamType):
    """A Config field's value on the command line; with grid, also a comma list (a grid axis),
    given as a list of typed values."""

    def __init__(self, field: Field, grid: bool = False):
        self.field, self.grid = field, grid
        self.name = {int: "integer", float: "float", bool: "boolean"}.get(field.base, "text")

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        one = "[" + "|".join(self.field.choices) + "]" if self.field.choices else self.name.upper()
        return f"{one}[,...]" if self.grid else one

    def convert(
        self, value: Value | list[Value], param: click.Parameter | None, ctx: click.Context | None
    ) -> Value | list[Value]:
        if not isinstance(value, str):
            return value
        try:
            if "," in value:
                if not self.grid:
                    self.fail(f"{value!r}: comma lists are for `orchestrator sweep`", param, ctx)
                return [coerce(self.field, v) for v in value.split(",")]
            return coerce(self.field, value)
        except ConfigError as e:
            self.fail(str(e).removeprefix(f"bad hyperparameter {self.field.flag}: "), param, ctx)


def config_options(
    cls: type = Config, *, grid: bool = False, flags: typing.Mapping[str, str] | None = None
) -> Callable[[F], F]:
    """A decorator adding one option per field of cls: name and aliases from the field (or
    `flags`), its type and choices, help with its bounds and default. Every option defaults to
    None (not given); `given(kwargs)` keeps the ones that were."""

    def decorate(fn: F) -> F:
        for f in reversed(fields(cls)):
            names = [(flags or {}).get(f.name, f.flag), *f.aliases]
            bounds = describe(f)
            shown = "none" if f.default is None else f.default
            default = "" if "[default:" in f.help else f"default: {shown}"
            extra = "; ".join(x for x in (bounds, default) if x)
            help_ = f"{f.help}  [{extra}]" if extra else f.help
            fn = click.option(*names, f.name, type=FieldType(f, grid), default=None, help=help_)(fn)
        return fn

    return decorate


def given(kwargs: dict[str, Any], cls: type = Config) -> dict[str, Value | list[Value]]:
    """The hyperparameter options that were given, removed from kwargs."""
    return {f.name: v for f in fields(cls) if (v := kwargs.pop(f.name, None)) is not None}
