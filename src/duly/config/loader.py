"""Loading settings: the YAML file and ``DULY_*`` variables, read as pydantic-settings sources."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsError,
    YamlConfigSettingsSource,
)

from duly.config.errors import ConfigError, ConfigProblem
from duly.config.problems import Origin, problems_of
from duly.config.settings import ENV_DELIMITER, ENV_PREFIX, LOADING, LoadContext, Settings

CONFIG_ENV_VAR = "DULY_CONFIG"

"""Environment variable naming the YAML file when no path is given."""


DEFAULT_CONFIG_FILE = "duly.yaml"

"""Read from the working directory when no file is named and it exists."""


class _Env(EnvSettingsSource):
    """``DULY_*`` variables from a given mapping (not necessarily ``os.environ``).

    Values that should be JSON but are not are passed on as text, so the model reports
    them with their key instead of a generic parsing failure. A nested variable whose
    first part is no setting (``DULY_ENGNE__QUEUES``) is reported as an unknown key;
    plain unknown ``DULY_*`` names are left alone (other tools use some).
    """

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.env_vars = _normalised_env(environ)

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        try:
            return super().decode_complex_value(field_name, field, value)
        except ValueError:
            return value

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        prefix = ENV_PREFIX.lower()
        known = set(self.settings_cls.model_fields)
        for name, value in self.env_vars.items():
            if not name.startswith(prefix):
                continue
            head, sep, tail = name[len(prefix) :].partition(ENV_DELIMITER)
            if sep and head not in known:
                data.setdefault(head, {tail: value})
        return data


class _Yaml(YamlConfigSettingsSource):
    """The YAML file, read with :class:`_YamlLoader` (see there) into plain data."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path, label: str) -> None:
        self._label = label
        super().__init__(settings_cls, yaml_file=path)

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        return _read_yaml(Path(file_path), self._label)


class _YamlLoader(yaml.SafeLoader):
    """YAML 1.1 safe loading with two fixes for config files.

    ``22:00`` stays the text ``"22:00"`` (plain YAML 1.1 reads it as the base-60 integer
    1320), and a key given twice in one mapping is an error instead of the last one
    silently winning.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


_INT_TAG = "tag:yaml.org,2002:int"


_FLOAT_TAG = "tag:yaml.org,2002:float"

_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag not in (_INT_TAG, _FLOAT_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

_YamlLoader.add_implicit_resolver(  # PyYAML's, without the base-60 form
    _INT_TAG,
    re.compile(
        r"""^(?:[-+]?0b[0-1_]+
            |[-+]?0[0-7_]+
            |[-+]?(?:0|[1-9][0-9_]*)
            |[-+]?0x[0-9a-fA-F_]+)$""",
        re.X,
    ),
    list("-+0123456789"),
)

_YamlLoader.add_implicit_resolver(  # PyYAML's, without the base-60 form
    _FLOAT_TAG,
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
            |\.[0-9_]+(?:[eE][-+][0-9]+)?
            |[-+]?\.(?:inf|Inf|INF)
            |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _read_yaml(path: Path, label: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(ConfigProblem("", f"{label} is not UTF-8 text")) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(ConfigProblem("", f"cannot read {label}: {reason}")) from None
    try:
        data = yaml.load(text, Loader=_YamlLoader)  # a SafeLoader subclass: no objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = exc.problem or exc.context or "not valid YAML"
        raise ConfigError(ConfigProblem("", f"{label}{where}: {what}")) from None
    except yaml.YAMLError as exc:
        raise ConfigError(ConfigProblem("", f"{label}: not valid YAML: {exc}")) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            ConfigProblem("", f"{label}: the top level must be a mapping of keys, not {data!r:.40}")
        )
    bad_keys = [key for key in data if not isinstance(key, str)]
    if bad_keys:
        raise ConfigError(ConfigProblem("", f"{label}: keys must be text, got {bad_keys[0]!r}"))
    return data


def _normalised_env(environ: Mapping[str, str]) -> dict[str, str | None]:
    """Variable names lower-cased (matching is case-insensitive); empty values ignored."""
    return {name.lower(): value for name, value in environ.items() if value != ""}


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read, merge and validate the settings.

    :param path: the YAML file to read (the CLI's ``--config``). When ``None``, the file
        named by ``DULY_CONFIG`` in ``environ``; when that is unset too, ``./duly.yaml`` if
        it exists, else no file.
    :param environ: where ``DULY_*`` overrides are read; ``os.environ`` by default.
    :raises ConfigError: a named file is missing or unreadable, or any value is invalid
        (all bad values are listed in one line).
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    file, label = _choose_file(path, env)

    env_source = _Env(Settings, env)
    sources: list[PydanticBaseSettingsSource] = [env_source]
    yaml_data: dict[str, Any] | None = None
    if file is not None:
        yaml_source = _Yaml(Settings, file, label)
        yaml_data = yaml_source.yaml_data
        sources.append(yaml_source)

    token = LOADING.set(LoadContext(tuple(sources)))
    try:
        return Settings()
    except ValidationError as exc:
        origin = Origin(_normalised_env(env), _env_names(env), yaml_data, label)
        raise ConfigError(problems_of(exc, origin)) from None
    except SettingsError as exc:
        cause = exc.__cause__
        detail = f"{exc}: {cause}" if cause else str(exc)
        raise ConfigError(ConfigProblem("", detail)) from None
    finally:
        LOADING.reset(token)


def settings_from_cli(config_path: str | None) -> Settings:
    """Settings for a CLI command: ``--config``, else ``DULY_CONFIG``, else ``./duly.yaml``.

    Reads ``os.environ``. Any failure is raised as :class:`ConfigError` with its one-line
    message; printing it and choosing the exit status is the caller's job.
    """
    try:
        return load_settings(config_path or None)
    except ConfigError:
        raise
    except (OSError, ValueError) as exc:  # pragma: no cover - defensive: load_settings maps these
        raise ConfigError(ConfigProblem("", f"cannot load settings: {exc}")) from None


def _choose_file(
    path: str | os.PathLike[str] | None, env: Mapping[str, str]
) -> tuple[Path | None, str]:
    if path is not None:
        named: str | os.PathLike[str] = path
        via = None
    elif env.get(CONFIG_ENV_VAR):
        named = env[CONFIG_ENV_VAR]
        via = CONFIG_ENV_VAR
    else:
        default = Path(DEFAULT_CONFIG_FILE)
        return (default, DEFAULT_CONFIG_FILE) if default.is_file() else (None, "")
    label = os.fspath(named)
    file = Path(label).expanduser()
    if not file.exists():
        raise ConfigError(ConfigProblem("", f"config file {label} not found", source=via))
    if not file.is_file():
        raise ConfigError(ConfigProblem("", f"config file {label} is not a file", source=via))
    return file, label


def _env_names(environ: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): name for name in environ}
