"""The base of every validated settings object (config, retry policy, model manifest, series rule): a frozen
pydantic model that refuses unknown keys, and `problems()`, which turns a pydantic `ValidationError` into
one line per problem, each naming the key that has it (`node.port: port 70000 out of range 1-65535`).

Scalar types are strict the way TOML and JSON values are: an integer is never a boolean or a string, a
number may be written as an integer (`2` for 2.0). Validators raise `ValueError` with the words after
the key (`"must be > 0, got -1"`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Annotated, Any, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    PlainSerializer,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
)

K = TypeVar("K")
V = TypeVar("V")


class Frozen(BaseModel):
    """Immutable after construction; construction validates; unknown keys are refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def replace(self, **changes: Any) -> Self:
        """A copy with `changes` (field -> value), validated like a new object."""
        return self.model_validate({**dict(self), **changes})


class FrozenDict(Mapping[K, V]):
    """A read-only mapping (a table inside a frozen object): equal to a dict with the same items, and
    unlike `types.MappingProxyType` it can be copied and pickled."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[K, V] | None = None) -> None:
        self._data: dict[K, V] = dict(data or {})

    def __getitem__(self, key: K) -> V:
        return self._data[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return repr(self._data)

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (self._data,))


def _frozen_mapping(value: Mapping[K, V]) -> Mapping[K, V]:
    return FrozenDict(value)


def _plain(value: Any) -> Any:
    """A FrozenDict (nested too) as a dict, for `model_dump`."""
    return {k: _plain(v) for k, v in value.items()} if isinstance(value, Mapping) else value


Number = Annotated[float, Strict()]  # an int or a float; never a bool or a string
Int = StrictInt
Bool = StrictBool
Str = StrictStr
# a read-only copy of a table
FrozenMap = Annotated[Mapping[K, V], AfterValidator(_frozen_mapping), PlainSerializer(_plain, return_type=dict)]


def empty_map() -> Mapping[Any, Any]:
    """The default of a FrozenMap field: `Field(default_factory=empty_map)`."""
    return FrozenDict()


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError(f"must be > 0, got {value:g}")
    return value


def _not_negative(value: float) -> float:
    if value < 0:
        raise ValueError(f"must be >= 0, got {value:g}")
    return value


PositiveNumber = Annotated[Number, AfterValidator(_positive)]
NonNegativeNumber = Annotated[Number, AfterValidator(_not_negative)]
PositiveInt = Annotated[Int, AfterValidator(_positive)]
NonNegativeInt = Annotated[Int, AfterValidator(_not_negative)]

_KINDS = {
    "int": "an integer", "float": "a number", "bool": "a boolean", "string": "a string", "list": "an array",
    "tuple": "an array", "dict": "a table", "model": "a table", "model_attributes": "a table", "mapping": "a table",
    "path": "a path string",
}


def describe(error: Mapping[str, Any]) -> str:
    """The words of one pydantic error, after its key."""
    kind, ctx, value = str(error["type"]), error.get("ctx") or {}, error.get("input")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", error["msg"])).removeprefix("Value error, ")
    if kind == "enum":
        return f"must be one of {str(ctx.get('expected', '')).replace(chr(39), '').replace(' or ', ', ')}, got {value!r}"
    if kind == "string_too_short":
        return "required (must not be empty)"
    base = kind.removesuffix("_type").removesuffix("_parsing")
    if base in _KINDS:
        what = _KINDS[base]
        if what == "a table":
            return f"must be a table, got {type(value).__name__}"
        return f"expected {what}, got {type(value).__name__}"
    return str(error["msg"])


def location(prefix: str, loc: Sequence[int | str]) -> str:
    """`("callers", 0, "host")` under prefix "" -> `callers[0].host`."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = f"{out}.{part}" if out else str(part)
    return out


def problems(exc: ValidationError, prefix: str = "") -> list[str]:
    """One line per problem in `exc`: `key: what is wrong`."""
    lines = []
    for error in exc.errors(include_url=False):
        where = location(prefix, error["loc"])
        lines.append(f"{where}: {describe(error)}" if where else describe(error))
    return lines
