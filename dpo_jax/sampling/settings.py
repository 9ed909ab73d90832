"""How completions are sampled, as one frozen, validated value: `SamplingSettings`.

Every sampling entry point takes it (`generate`, `sample_token_ids`, `sample_policy`, the win-rate sweep,
the frontier, the commands), so a value out of range is refused once, where the value is made, whichever
entry point a caller uses: a negative temperature would otherwise sample the inverted distribution.

The commands that sample declare their flags with one fragment, `sampling_flags`, and read them back
with `settings_from_flags`; each flag's value is checked as it is parsed, so `--temperature=-1` is one
`error: command line: ...` line and exit status 2 before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence

from dpo_jax import UserError
from dpo_jax.config.command_line import FlagRow


class SamplingSettingsError(UserError):
    """A sampling setting out of range: `field`, the `value` given and the `rule` it breaks."""

    def __init__(self, field: str, value, rule: str):
        super().__init__(f"{field}={value!r} {rule}")
        self.field, self.value, self.rule = field, value, rule


def _real(field: str, value, rule: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise SamplingSettingsError(field, value, rule)
    return float(value)


def _integer(field: str, value, rule: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SamplingSettingsError(field, value, rule)
    return int(value)


# field -> (type, the rule, help): the rule as the error states it.
RULES = {
    "temperature": (float, "must be a finite number >= 0 (0: greedy)", "sampling temperature (0: greedy)"),
    "top_k": (int, "must be an integer >= 0 (0: no top-k filtering)", "keep the k most likely tokens (0: off)"),
    "top_p": (float, "must lie in (0, 1] (1: no nucleus filtering)", "nucleus sampling mass (1: off)"),
    "max_new_tokens": (int, "must be an integer >= 1", "tokens sampled at most per completion"),
}


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
    """temperature (0: greedy argmax), top_k (0: all tokens), top_p (1: all), max_new_tokens (>= 1).

    Filtering follows Hugging Face's order: top-k, then the nucleus of the tempered distribution."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 64

    def __post_init__(self):
        rule = lambda field: RULES[field][1]  # noqa: E731
        temperature = _real("temperature", self.temperature, rule("temperature"))
        top_k = _integer("top_k", self.top_k, rule("top_k"))
        top_p = _real("top_p", self.top_p, rule("top_p"))
        max_new_tokens = _integer("max_new_tokens", self.max_new_tokens, rule("max_new_tokens"))
        checks = (
            ("temperature", temperature >= 0),
            ("top_k", top_k >= 0),
            ("top_p", 0 < top_p <= 1),
            ("max_new_tokens", max_new_tokens >= 1),
        )
        for field, ok in checks:
            if not ok:
                raise SamplingSettingsError(field, getattr(self, field), rule(field))
        for field, value in zip(RULES, (temperature, top_k, top_p, max_new_tokens)):
            object.__setattr__(self, field, value)  # ints as given for floats become floats

    @property
    def filters_tokens(self) -> bool:
        """Whether top-k or top-p removes any token: the sampler runs its sort-based filter only then."""
        return self.top_k > 0 or self.top_p < 1.0

    def traced(self) -> tuple:
        """(temperature, top_k, top_p) as the sampler's traced arguments: a sweep over them reuses one
        compiled program."""
        import jax.numpy as jnp

        return jnp.float32(self.temperature), jnp.int32(self.top_k), jnp.float32(self.top_p)

    def replace(self, **changes) -> SamplingSettings:
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELDS = tuple(RULES)


def _flag_parser(field: str):
    """A flag's text -> its value, refused (ValueError: absl's flag error) when out of range."""
    kind = RULES[field][0]

    def parse(text: str):
        value = kind(text)
        try:
            SamplingSettings(**{field: value})
        except SamplingSettingsError as error:
            raise ValueError(error.rule) from None
        return value

    parse.__name__ = kind.__name__
    return parse


def sampling_flags(*, max_new_tokens: int, fields: Sequence[str] = FIELDS, **defaults) -> tuple[FlagRow, ...]:
    """The flags of `fields` (all four by default) as `config.command_line` rows, each checked as it is
    parsed; `max_new_tokens` and any other `defaults` are the command's own defaults."""
    values = SamplingSettings(max_new_tokens=max_new_tokens, **defaults).as_dict()
    return tuple((field, _flag_parser(field), values[field], RULES[field][2]) for field in fields)


def temperatures_flag(text: str) -> tuple[float, ...]:
    """A comma-separated list of temperatures (a win-rate sweep's), each checked as a setting."""
    values = tuple(_flag_parser("temperature")(t) for t in text.split(",") if t.strip())
    if not values:
        raise ValueError("needs at least one temperature")
    return values


def settings_from_flags(flag_values, **fixed) -> SamplingSettings:
    """The settings of the `sampling_flags` a command parsed (an argparse-like namespace or absl's
    FlagValues), with `fixed` values for the fields the command does not take as flags."""
    given = {field: getattr(flag_values, field) for field in FIELDS if hasattr(flag_values, field)}
    return SamplingSettings(**{**given, **fixed})
