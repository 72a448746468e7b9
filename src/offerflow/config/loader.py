"""The one place that reads partner config files and the environment."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from offerflow.config.models import PartnerConfig
from offerflow.config.proxies import EnvironmentProxies
from offerflow.errors import ConfigError

__all__ = ["DEFAULT_CONFIG", "load_config"]

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

#: the default partner's config, shipped inside the package beside its sample data
DEFAULT_CONFIG = Path(str(resources.files("offerflow.config").joinpath("default.yaml")))


def load_config(
    path: Path | None = None, *, environ: Mapping[str, str] | None = None
) -> PartnerConfig:
    """Read, interpolate and validate a partner config; ``None`` loads the default partner.

    Relative input paths are taken relative to the config file. ``${NAME}`` in any string is
    replaced by the environment variable NAME; a missing variable is an error naming the key.
    Each endpoint's TLS files are found and loaded, and its proxy decided (see
    :meth:`~offerflow.config.EndpointConfig.resolved`).
    """
    path = (path or DEFAULT_CONFIG).resolve()
    env = os.environ if environ is None else environ
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("config file not found", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config: {exc}", path=path) from exc
    try:
        node = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", path=path) from exc
    if not isinstance(raw, dict):
        raise ConfigError("a partner config is a YAML mapping", path=path)
    data = _interpolate(raw, env, path, ())
    try:
        config = PartnerConfig.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, path, node) from None
    # paths in a config are relative to the config file, wherever the command runs
    proxies = EnvironmentProxies.from_environ(env)
    return config.model_copy(
        update={
            "input": config.input.model_copy(update={"path": path.parent / config.input.path}),
            "feature_modules": tuple(path.parent / m for m in config.feature_modules),
            "models": tuple(
                m.resolved(path, f"models.{i}", proxies) for i, m in enumerate(config.models)
            ),
            "offer": config.offer.resolved(path, "offer", proxies),
        }
    )


def _interpolate(value: Any, env: Mapping[str, str], path: Path, loc: tuple[str, ...]) -> Any:
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                raise ConfigError(
                    f"environment variable {name} is not set", path=path, key=".".join(loc)
                )
            return env[name]

        return _ENV_REF.sub(substitute, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, env, path, (*loc, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, path, (*loc, str(i))) for i, v in enumerate(value)]
    return value


def _config_error(exc: ValidationError, path: Path, node: yaml.Node | None) -> ConfigError:
    """One readable error for all validation problems, each with its key, line and a hint."""
    problems = []
    first_key = None
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"])
        key = ".".join(loc) or "(top level)"
        first_key = first_key or key
        line = _line_of(node, loc)
        where = f"line {line}, " if line else ""
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key" + _suggestion(loc)
        problems.append(f"{where}key {key!r}: {message}")
    return ConfigError("invalid config:\n  " + "\n  ".join(problems), path=path, key=first_key)


def _suggestion(loc: tuple[str, ...]) -> str:
    """A close-match hint for an unknown key, from the fields of the model that holds it."""
    model: type[BaseModel] | None = PartnerConfig
    for part in loc[:-1]:
        if model is None:
            return ""
        field = model.model_fields.get(part)
        if field is None:
            continue  # a list index or a mapping key: stay on the same model
        model = _model_of(field.annotation)
    if model is None:
        return ""
    matches = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _line_of(node: yaml.Node | None, loc: tuple[str, ...]) -> int | None:
    """The 1-based line of the YAML node at ``loc``, as far down as the document goes."""
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == part:
                    line = key_node.start_mark.line + 1
                    node = value_node
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
        else:
            return line
    return line
