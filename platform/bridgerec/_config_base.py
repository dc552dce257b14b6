"""Base class of every config section and the config error (a leaf: section configs import it, and the
root config composes the sections)."""

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict

__all__ = ["ConfigError", "Section", "read_yaml_mapping"]


class Section(BaseModel):
    """Strict config section: unknown keys fail, field docstrings become descriptions."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)


class ConfigError(ValueError):
    """A configuration problem, named by its dotted key."""


def read_yaml_mapping(path: str | Path, what: str = "config file") -> dict:
    """The mapping at the top of a YAML file (empty file: ``{}``); a missing file, bad YAML or
    another top-level type is a :class:`ConfigError` naming ``what`` and the path."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{what} {p} does not exist")
    try:
        loaded = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {p} is not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{what} {p} must hold a mapping at the top level")
    return loaded
