"""Base class of every config section and the config error (a leaf: section configs import it, and the
root config composes the sections)."""

from pydantic import BaseModel, ConfigDict

__all__ = ["ConfigError", "Section"]


class Section(BaseModel):
    """Strict config section: unknown keys fail, field docstrings become descriptions."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)


class ConfigError(ValueError):
    """A configuration problem, named by its dotted key."""
