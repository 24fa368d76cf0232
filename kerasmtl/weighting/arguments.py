"""Checks of the constructor arguments of loss weightings and balancers.

Each check returns the argument converted (`float`, `int`) or as given, and
otherwise raises `ValueError` with the message every weighting uses:
"Invalid value for argument `x`. Expected <what>. Received: x=<value>".
Comparisons are written so that NaN fails every bound.

Examples:

>>> check_float("epsilon", 1e-8, minimum=0, include_minimum=False)
1e-08
>>> check_float("beta", 1, minimum=0, maximum=1, include_maximum=False)
Traceback (most recent call last):
    ...
ValueError: Invalid value for argument `beta`. Expected a float in [0, 1). Received: beta=1
>>> check_int("iterations", 20.0, minimum=1)
20
>>> check_choice("scale", "max", ("min", "median"))
Traceback (most recent call last):
    ...
ValueError: Invalid value for argument `scale`. Expected one of ('min', 'median'). Received: scale='max'
"""

from __future__ import annotations

from collections.abc import Container


def _invalid(name: str, expected: str, received: str) -> ValueError:
    return ValueError(
        f"Invalid value for argument `{name}`. Expected {expected}. "
        f"Received: {name}={received}"
    )


def _interval(minimum, maximum, include_minimum: bool, include_maximum: bool) -> str:
    if minimum is not None and maximum is not None:
        left = "[" if include_minimum else "("
        right = "]" if include_maximum else ")"
        return f"in {left}{minimum}, {maximum}{right}"
    if minimum is not None:
        return f"{'>=' if include_minimum else '>'} {minimum}"
    if maximum is not None:
        return f"{'<=' if include_maximum else '<'} {maximum}"
    return ""


def check_float(
    name: str,
    value,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    include_minimum: bool = True,
    include_maximum: bool = True,
) -> float:
    """Checks that `value` is a float within the given bounds.

    Args:
        name: str. The argument's name, for the message.
        value: The argument as given; the message shows it with `str`.
        minimum: float or `None`. The lower bound, written as given in the
            message (pass `0`, not `0.0`, for "a float >= 0"). `None`: no
            lower bound.
        maximum: float or `None`. The upper bound, likewise.
        include_minimum: bool. Whether `value == minimum` is allowed.
        include_maximum: bool. Whether `value == maximum` is allowed.

    Returns:
        `float(value)`.

    Raises:
        ValueError: `value` is out of bounds, or NaN where there is a bound.
    """
    number = float(value)
    above = minimum is None or (
        number >= minimum if include_minimum else number > minimum
    )
    below = maximum is None or (
        number <= maximum if include_maximum else number < maximum
    )
    if not (above and below):
        bounds = _interval(minimum, maximum, include_minimum, include_maximum)
        raise _invalid(name, f"a float {bounds}", f"{value}")
    return number


def check_int(name: str, value, *, minimum: int) -> int:
    """Checks that `value` is an integral number >= `minimum` (`2.0` passes,
    `2.5` is refused rather than truncated).

    Args:
        name: str. The argument's name, for the message.
        value: The argument as given; the message shows it with `str`.
        minimum: int. The smallest value allowed.

    Returns:
        `int(value)`.

    Raises:
        ValueError: `value` is below `minimum`, or not integral.
    """
    number = int(value)
    if number != value or number < minimum:
        raise _invalid(name, f"an int >= {minimum}", f"{value}")
    return number


def check_choice(name: str, value, choices: Container, *, expected: str | None = None):
    """Checks that `value` is one of `choices`.

    Args:
        name: str. The argument's name, for the message.
        value: The argument as given; the message shows it with `repr`.
        choices: The allowed values (a tuple, shown as is in the message).
        expected: str or `None`. How the message names the allowed values;
            defaults to `"one of {choices}"`.

    Returns:
        `value`, unchanged.

    Raises:
        ValueError: `value` is not in `choices`.
    """
    if value not in choices:
        raise _invalid(name, expected or f"one of {choices}", repr(value))
    return value
