"""Dataclass configs from YAML + ``key=value`` overrides, with errors that name the bad key.

Usage::

    cfg = load_config(PPOConfig, ["config=examples/rebo_smollm2.yaml", "worker.rollout.n=8"])

Order: dataclass defaults <- YAML file (``config=path``) <- dotlist overrides. Every nested
dataclass may define ``post_init(self)`` (derived fields, validation); ``deep_post_init`` calls
them parents first. Each field is documented by a string literal placed right under it
(attribute docstring); ``describe_config`` prints them.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key, value or file that cannot be used; the message names it."""


def _parse_scalar(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
    node[keys[-1]] = value


def _merge(base: dict, update: dict) -> dict:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def read_yaml(path: str | Path) -> dict:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def parse_overrides(argv: list[str]) -> tuple[dict, Path | None]:
    """``["config=x.yaml", "a.b=1"]`` -> (tree of overrides, yaml path)."""
    tree: dict = {}
    config_path = None
    for arg in argv:
        if "=" not in arg:
            raise ConfigError(f"argument {arg!r} is not of the form key=value (e.g. worker.rollout.n=8)")
        key, _, text = arg.partition("=")
        key = key.strip().lstrip("-")
        if key == "config":
            config_path = Path(text)
            continue
        _set_dotted(tree, key, _parse_scalar(text))
    return tree, config_path


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: cannot be None")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a section (mapping), got {value!r}")
        return build_dataclass(tp, value, where)
    if origin in (list, tuple):
        if isinstance(value, str) and tp is not str:
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict or tp is dict:
        if isinstance(value, str):
            import json

            try:
                value = json.loads(value)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{where}: expected a mapping or a JSON object string, got {value!r}") from e
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return "" if value is None else str(value)
    return value


def build_dataclass(cls: type[T], values: dict, where: str = "") -> T:
    """Instantiate ``cls`` from a (nested) dict, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    init_fields = {name for name, f in fields.items() if f.init}
    kwargs = {}
    for key, value in values.items():
        path = f"{where}.{key}" if where else key
        if key not in init_fields:
            allowed = ", ".join(sorted(init_fields))
            hint = " (it is derived, not settable)" if key in fields else ""
            raise ConfigError(f"unknown config key {path!r}{hint}; allowed keys here: {allowed}")
        kwargs[key] = _coerce(value, hints[key], path)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from e


def deep_post_init(obj: Any) -> None:
    """Call ``post_init`` on ``obj`` and then on every nested dataclass (parents first)."""
    if hasattr(obj, "post_init"):
        obj.post_init()
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            deep_post_init(value)


def load_config(cls: type[T], argv: list[str]) -> T:
    """Defaults <- ``config=path.yaml`` <- ``key=value`` overrides; then ``deep_post_init``."""
    overrides, config_path = parse_overrides(argv)
    tree = read_yaml(config_path) if config_path else {}
    _merge(tree, overrides)
    cfg = build_dataclass(cls, tree)
    deep_post_init(cfg)
    return cfg


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings: the string literal right under each field of a dataclass (and its dataclass
    bases; a subclass's own docstring wins)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body
        for node, following in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant):
                    docs[node.target.id] = " ".join(str(following.value.value).split())
    return docs


def describe_config(cls: type, prefix: str = "", instance: Any = None) -> list[str]:
    """One line per settable key: ``dotted.key = default  # doc`` (nested sections expanded, with the
    defaults the parent's ``default_factory`` gives them)."""
    lines = []
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    instance = cls() if instance is None else instance
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            lines.extend(describe_config(hints[f.name], key + ".", getattr(instance, f.name)))
        else:
            lines.append(f"{key} = {getattr(instance, f.name)!r}  # {docs.get(f.name, '')}")
    return lines


def check_choice(value: Any, allowed: typing.Iterable[Any], key: str) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of: {', '.join(map(str, allowed))}")
