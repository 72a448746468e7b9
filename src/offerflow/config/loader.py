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

__all__ = ["DEFAULT_CONFIG", "MAX_YAML_NODES", "config_from_document", "load_config"]

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

#: the most values (mappings, sequences and scalars) a config may hold with its aliases expanded
MAX_YAML_NODES = 100_000

#: the default partner's config, shipped inside the package beside its sample data
DEFAULT_CONFIG = Path(str(resources.files("offerflow.config").joinpath("default.yaml")))


def load_config(
    path: Path | None = None, *, environ: Mapping[str, str] | None = None
) -> PartnerConfig:
    """Read, interpolate and validate a partner config; ``None`` loads the default partner.

    Relative input paths are taken relative to the config file. ``${NAME}`` in any string is
    replaced by the environment variable NAME; a missing variable is an error naming the key.
    The config remembers which strings were ``${NAME}`` templates (see its ``document()``).
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
    raw, node = _parse(text, path)
    if not isinstance(raw, dict):
        raise ConfigError("a partner config is a YAML mapping", path=path)
    return _validated(raw, source=path, base=path.parent, env=env, node=node)


def config_from_document(
    document: Mapping[str, Any],
    *,
    base: Path,
    source: Path,
    environ: Mapping[str, str] | None = None,
) -> PartnerConfig:
    """A config written down as data (:meth:`PartnerConfig.document`), read as a file is read.

    ``${NAME}`` is replaced by the environment variable again and relative paths are taken
    relative to ``base`` (the directory of the file the config first came from); errors name
    ``source`` (the file the document is in) and the key.
    """
    env = os.environ if environ is None else environ
    return _validated(dict(document), source=source, base=base, env=env, node=None)


def _validated(
    raw: dict[str, Any], *, source: Path, base: Path, env: Mapping[str, str], node: yaml.Node | None
) -> PartnerConfig:
    """The config of a document: interpolated, validated, its paths relative to ``base``."""
    templates: dict[tuple[str, ...], str] = {}
    data = _interpolate(raw, env, source, (), templates)
    try:
        config = PartnerConfig.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, source, node) from None
    # paths in a config are relative to the config file, wherever the command runs
    proxies = EnvironmentProxies.from_environ(env)
    config = config.model_copy(
        update={
            "input": config.input.model_copy(update={"path": _relative(base, config.input.path)}),
            "feature_modules": tuple(base / m for m in config.feature_modules),
            "models": tuple(
                m.resolved(base=base, source=source, key=f"models.{i}", environment=proxies)
                for i, m in enumerate(config.models)
            ),
            "offer": config.offer.resolved(
                base=base, source=source, key="offer", environment=proxies
            ),
        }
    )
    try:
        return config.with_env_templates(templates)
    except ValueError as exc:
        raise ConfigError(
            "a ${NAME} reference here cannot be written down as one", path=source, key=str(exc)
        ) from None


def _parse(text: str, path: Path) -> tuple[Any, yaml.Node | None]:
    """The document in ``text`` and its node tree (for line numbers), parsed once, safely.

    Aliases are followed only as far as :data:`MAX_YAML_NODES`: the node tree shares an aliased
    node, but the data built from it is copied where it is used (interpolated, validated), so a
    few hundred bytes of nested aliases would otherwise expand to billions of values.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_expansion(node, path)
        return loader.construct_document(node), node
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", path=path) from exc
    except RecursionError:
        raise ConfigError("not a partner config: YAML nested too deeply", path=path) from None
    finally:
        loader.dispose()


def _check_expansion(root: yaml.Node, path: Path) -> None:
    """Refuse a node tree that, with every alias (and merge key) expanded, exceeds the cap."""
    sizes: dict[int, int] = {}  # expanded size of each node seen, by id: each is counted once
    inside: set[int] = set()  # the nodes being counted: an alias to one of them is a cycle

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in inside:
            raise ConfigError("a YAML alias refers to a node that contains it", path=path)
        inside.add(key)
        total = 1
        if isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(v) for v in node.value)
        inside.discard(key)
        if total > MAX_YAML_NODES:
            raise ConfigError(
                f"refused: its YAML aliases expand to more than {MAX_YAML_NODES:,} values "
                "(a partner config has a few hundred)",
                path=path,
            )
        sizes[key] = total
        return total

    size(root)


def _interpolate(
    value: Any,
    env: Mapping[str, str],
    path: Path,
    loc: tuple[str, ...],
    templates: dict[tuple[str, ...], str],
) -> Any:
    """``value`` with every ``${NAME}`` replaced; ``templates`` learns where each string was."""
    if isinstance(value, str):
        if _ENV_REF.search(value):
            templates[loc] = value

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                raise ConfigError(
                    f"environment variable {name} is not set", path=path, key=".".join(loc)
                )
            return env[name]

        return _ENV_REF.sub(substitute, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, env, path, (*loc, str(k)), templates) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, path, (*loc, str(i)), templates) for i, v in enumerate(value)]
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


def _relative(base: Path, location: Path | str) -> Path | str:
    """A local path taken relative to ``base``; an object store URL as it is."""
    return base / location if isinstance(location, Path) else location
