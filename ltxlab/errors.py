"""Typed errors shared by every stage.

`InputError` and its subclasses mean "the user's request, config or data is wrong" — the seeds' HTTP 422
class. Anything else that escapes is a bug or an environment failure.
"""

from __future__ import annotations


class LtxlabError(Exception):
    """Base class of every error ltxlab raises on purpose."""


class InputError(LtxlabError):
    """Bad user input (request, config, dataset): reported as a 422-style error."""

    code = 422


class ConfigError(InputError):
    """An invalid configuration value or combination; the message names the config key."""


class DatasetError(InputError):
    """A dataset that cannot be used (layout, media, captions, limits)."""


class ModelPathError(ConfigError):
    """A model path in the config is missing, does not exist, or does not hold the expected weights."""
