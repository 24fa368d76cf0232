"""Loss weightings and gradient balancers chosen by name: `NAME[:key=value,...]`.

The command line's `--weighting` (`pcgrad`, `uncertainty`, `dwa:temperature=2`,
`famo:learning_rate=0.025`). The names are every class that
`kerasmtl.weighting` exports in `__all__` and registers with Keras
(`@keras.saving.register_keras_serializable`), so a new method is offered
as soon as it is added there. They are read from the package's source, not
by importing it: `kerasmtl train --help` and argument errors must answer
before TensorFlow loads (only `weighting_factory` imports the classes).

A name is matched case-insensitively, as the class name (`PCGrad`,
`DynamicWeightAverage`) or in snake_case (`dynamic_weight_average`); a class
name of three or more words also answers to its initials (`dwa`, `rlw`,
`gls`). Argument values are Python literals (`2`, `0.5`, `True`, `'min'`,
`{'a': 1.0}`); anything else is taken as a string (`scale=min`).
"""

from __future__ import annotations

import ast
import functools
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_PACKAGE = Path(__file__).parent / "weighting"
_WORD = re.compile(r"[A-Z][a-z]+|[A-Z]+(?![a-z])|[a-z]+|\d+")


@dataclass(frozen=True)
class WeightingName:
    """One registered weighting: its class name, whether it works on the
    losses (`"loss"`) or on the task gradients (`"gradient"`), and the
    arguments its own `__init__` requires (no default)."""

    class_name: str
    level: str
    required: tuple[str, ...]

    @property
    def alias(self) -> str | None:
        words = _WORD.findall(self.class_name)
        return "".join(w[0] for w in words).lower() if len(words) >= 3 else None


@functools.cache
def registered_weightings() -> tuple[WeightingName, ...]:
    """The registered classes of `kerasmtl.weighting.__all__`, in its order.

    Examples:

    >>> names = [w.class_name for w in registered_weightings()]
    >>> "PCGrad" in names and "Uncertainty" in names and "LossWeighting" not in names
    True
    """
    init = ast.parse((_PACKAGE / "__init__.py").read_text())
    modules, exported = {}, []
    for node in init.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                modules[alias.asname or alias.name] = node.module.rsplit(".", 1)[-1]
        elif (isinstance(node, ast.Assign) and len(node.targets) == 1
              and getattr(node.targets[0], "id", None) == "__all__"):
            exported = ast.literal_eval(node.value)
    found = []
    for name in exported:
        if name not in modules:
            continue
        tree = ast.parse((_PACKAGE / f"{modules[name]}.py").read_text())
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name == name and _registered(node):
                found.append(WeightingName(name, _level(node), _required(node)))
    return tuple(found)


def _registered(node: ast.ClassDef) -> bool:
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if getattr(target, "attr", getattr(target, "id", None)) == (
                "register_keras_serializable"):
            return True
    return False


def _level(node: ast.ClassDef) -> str:
    bases = {getattr(b, "id", getattr(b, "attr", None)) for b in node.bases}
    return "gradient" if "GradientBalancer" in bases else "loss"


def _required(node: ast.ClassDef) -> tuple[str, ...]:
    for item in node.body:
        if isinstance(item, ast.FunctionDef) and item.name == "__init__":
            args = item.args.posonlyargs + item.args.args
            positional = [a.arg for a in args[1:len(args) - len(item.args.defaults)]]
            keyword = [a.arg for a, d in zip(item.args.kwonlyargs, item.args.kw_defaults)
                       if d is None]
            return tuple(positional + keyword)
    return ()


def _key(text: str) -> str:
    return text.replace("_", "").replace("-", "").lower()


def spellings(*, bare_only: bool = False) -> dict[str, str]:
    """`{lower-case name or initials: class name}` of every registered
    weighting; with `bare_only`, of those that need no argument."""
    names = {}
    for weighting in registered_weightings():
        names[_key(weighting.class_name)] = weighting.class_name
    for weighting in registered_weightings():
        alias = weighting.alias
        if alias and alias not in names:  # an ambiguous alias is left out
            names[alias] = weighting.class_name
    if bare_only:
        needy = {w.class_name for w in registered_weightings() if w.required}
        names = {k: v for k, v in names.items() if v not in needy}
    return names


def describe_names() -> str:
    """The valid names, by level, for help texts and errors."""

    def listed(level):
        return ", ".join(
            w.class_name + (f" ({w.alias})" if w.alias else "")
            + (f" (needs {', '.join(w.required)})" if w.required else "")
            for w in registered_weightings() if w.level == level)

    return f"loss weightings: {listed('loss')}; gradient balancers: {listed('gradient')}"


def parse_weighting_spec(text: str) -> tuple[str, dict]:
    """`"NAME[:key=value,...]"` -> `(class name, {key: value})`, with no import
    of TensorFlow. Checks the name and the syntax, not the arguments.

    Examples:

    >>> parse_weighting_spec("dwa:temperature=2")
    ('DynamicWeightAverage', {'temperature': 2})
    >>> parse_weighting_spec("aligned_mtl:scale=median,rep_grad=true")
    ('AlignedMTL', {'scale': 'median', 'rep_grad': True})
    """
    name, _, arguments = text.strip().partition(":")
    class_name = spellings().get(_key(name.strip()))
    if class_name is None:
        raise ValueError(
            f"Unknown weighting '{name}'. Valid names (case-insensitive, CamelCase or "
            f"snake_case): {describe_names()}."
        )
    kwargs = {}
    for item in _split_top_level(arguments):
        key, equals, value = item.partition("=")
        key = key.strip()
        if not equals or not key.isidentifier():
            raise ValueError(
                f"Invalid weighting argument '{item}' in '{text}'. Give arguments as "
                f"NAME:key=value,key2=value2 (e.g. dwa:temperature=2)."
            )
        kwargs[key] = _literal(value.strip())
    return class_name, kwargs


def _split_top_level(text: str) -> list[str]:
    """Splits on commas outside brackets and quotes (`weights={'a': 1, 'b': 2}`)."""
    items, depth, quote, start = [], 0, None, 0
    for i, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item.strip() for item in items if item.strip()]


def _literal(text: str):
    lowered = text.lower()
    if lowered in ("true", "false", "none"):
        return {"true": True, "false": False, "none": None}[lowered]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word: a string


def accepted_arguments(cls) -> dict[str, object]:
    """`{argument: default}` of a weighting class's constructor, through its
    bases up to `LossWeighting` (`inspect.Parameter.empty`: required)."""
    from kerasmtl.weighting import LossWeighting

    arguments = {}
    for klass in cls.__mro__:
        if not (isinstance(klass, type) and issubclass(klass, LossWeighting)):
            break
        if "__init__" not in vars(klass):
            continue
        for parameter in list(inspect.signature(klass.__init__).parameters.values())[1:]:
            if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                arguments.setdefault(parameter.name, parameter.default)
    return arguments


def weighting_factory(text: str) -> Callable:
    """A zero-argument factory of the weighting `text` names (the class
    itself when no arguments are given), after checking the arguments'
    names and values by building one.

    Examples:

    >>> factory = weighting_factory("famo:learning_rate=0.025")
    >>> type(factory()).__name__, factory().learning_rate
    ('FAMO', 0.025)
    """
    from kerasmtl import weighting

    class_name, kwargs = parse_weighting_spec(text)
    cls = getattr(weighting, class_name)
    accepted = accepted_arguments(cls)
    listed = ", ".join(
        name if default is inspect.Parameter.empty else f"{name}={default!r}"
        for name, default in accepted.items())
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"{class_name} takes no argument {', '.join(f'`{k}`' for k in unknown)} "
            f"(in --weighting '{text}'). Its arguments: {listed or 'none'}."
        )
    missing = [k for k, d in accepted.items() if d is inspect.Parameter.empty
               and k not in kwargs]
    if missing:
        raise ValueError(
            f"{class_name} needs argument(s) {', '.join(missing)}: give them as "
            f"'{class_name.lower()}:{missing[0]}=VALUE', VALUE a Python literal such as "
            f"0.5, 'text' or {{'task_a': 1.0, 'task_b': 0.5}}. Its arguments: {listed}."
        )
    for key, value in kwargs.items():
        _check_value(class_name, key, value, accepted[key])
    try:
        cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"Invalid value for {class_name}'s argument(s) "
            f"{', '.join(f'{k}={v!r}' for k, v in kwargs.items())}: {error}"
        ) from None
    return functools.partial(cls, **kwargs) if kwargs else cls


def _check_value(class_name: str, key: str, value, default) -> None:
    # The defaults say what each argument is (the annotations are strings).
    if default is inspect.Parameter.empty or default is None:
        return
    if isinstance(default, bool):
        valid = isinstance(value, bool)
    elif isinstance(default, (int, float)):
        kinds = (int, float) if isinstance(default, float) else (int,)
        valid = isinstance(value, kinds) and not isinstance(value, bool)
    else:
        valid = isinstance(value, type(default))
    if not valid:
        kind = type(default).__name__
        raise ValueError(
            f"Invalid value for {class_name}'s argument `{key}`. Expected "
            f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} (its default is {default!r}). "
            f"Received: "
            f"{key}={value!r}"
        )
