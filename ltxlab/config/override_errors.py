"""Hydra composition failures caused by a command-line override, reported as bad input.

A wrong type, an unknown key, a missing group option or bad override grammar is the user's input like any other
bad value: one ``error:`` line naming the key (with a suggestion where one is cheap), ``error.json`` (422) where a
run would have written it, exit code 2. A failure no override explains (a broken ``ltxlab/conf/`` file) is re-raised.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

from hydra.errors import MissingConfigException, OverrideParseException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from ltxlab.config import CONF_DIR
from ltxlab.config.validate import unknown_key_message
from ltxlab.errors import ConfigError, report_input_error

CONFIG_NAME = "config"


def report_composition_error(exc: Exception) -> None:
    """Report a composition failure caused by a command-line override as bad input (exit 2); re-raise any other
    (a broken ltxlab/conf/ file is our bug, exit 1)."""
    from hydra._internal.utils import get_args_parser  # the parser hydra.main itself used on this argv

    args = get_args_parser().parse_args()
    described = _describe(exc, args.overrides)
    if described is None:
        raise exc
    message, culprit = described
    launching = not (args.cfg or args.help or args.hydra_help or args.info or args.shell_completion)
    run_dir = _run_dir(args.overrides, culprit, args.multirun, args.config_name) if launching else None
    report_input_error(ConfigError(message), run_dir)


def _describe(exc: Exception, overrides: list[str]) -> tuple[str, str] | None:
    """One line naming the key and what is wrong, and the override at fault; None when no override is."""
    if isinstance(exc, OverrideParseException):
        return f"{exc.override}: not a valid override ({_first_line(exc.message)})", exc.override
    if isinstance(exc, MissingConfigException):
        group, _, option = (exc.missing_cfg_file or "").rpartition("/")
        culprit = _find_override(overrides, group) if group else None
        choices = f" (choose from {', '.join(exc.options)})" if exc.options else ""
        return (f"{group}={option}: no such option{choices}", culprit) if culprit else None
    cause = exc.__cause__
    if isinstance(cause, OmegaConfBaseException) and cause.full_key:
        key = cause.full_key
        culprit = _find_override(overrides, key)
        if culprit is None:
            return None
        if isinstance(cause, ConfigAttributeError | ConfigKeyError):
            return unknown_key_message(key), culprit
        value = cause.value if isinstance(cause.value, str) else repr(cause.value)
        expected = _expected_type(cause) if isinstance(cause, ValidationError) else None
        if expected:
            return f"{key}={value} is not {expected}", culprit
        return f"{culprit}: {_first_line(cause.msg)}", culprit
    # No OmegaConf cause (e.g. "Ambiguous value for argument 'mode=i2v,a2v'"): ours only if it quotes an override.
    text = str(exc)
    culprit = next((o for o in overrides if f"'{o}'" in text or f"'{_override_key(o)}'" in text), None)
    hint = " (quote it, write [a,b] for a list, or add --multirun to sweep)" if "--multirun" in text else ""
    return (_first_line(text) + hint, culprit) if culprit else None


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else "invalid value"


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _find_override(overrides: list[str], key: str) -> str | None:
    # `logger.nope.x=1` fails at `logger.nope`: the override's key is the failing key or lies under it.
    return next((o for o in overrides if _override_key(o) == key or _override_key(o).startswith(key + ".")), None)


_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


def _expected_type(cause: OmegaConfBaseException) -> str | None:
    """What the schema's field accepts, from the dataclass that holds it (ours or Hydra's own)."""
    if not dataclasses.is_dataclass(cause.object_type):
        return None
    try:
        hint = typing.get_type_hints(cause.object_type).get(str(cause.key))
    except Exception:  # an unresolvable annotation: fall back to OmegaConf's message
        return None
    args = typing.get_args(hint)
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args
    if optional:
        rest = [a for a in args if a is not type(None)]
        hint = rest[0] if len(rest) == 1 else None
    name = _TYPE_NAMES.get(hint) or ("a list" if typing.get_origin(hint) is list else None)
    return f"{name} or null" if name and optional else name


def _run_dir(overrides: list[str], culprit: str, multirun: bool, config_name: str | None) -> Path | None:
    """Where the recipe writes error.json for bad input: the run's output dir (with --multirun the sweep dir, as no
    job dir exists). Composition failed, so compose again without the bad override to resolve it; failing that
    (a second bad override, sweep syntax), with only the ``hydra.*`` overrides, then with none. ``${now:...}`` in
    the default pattern then reads the time of this report: a run dir did not exist yet, but a sweep dir Hydra made
    before a swept value failed can be a second older. (``--config-dir`` additions are not on this search path.)"""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    rest = [o for o in overrides if o != culprit]
    for attempt in (rest, [o for o in rest if _override_key(o).startswith("hydra.")], []):
        try:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                cfg = compose(config_name=config_name or CONFIG_NAME, overrides=attempt, return_hydra_config=True)
            return Path(OmegaConf.select(cfg, key, throw_on_missing=True))
        except Exception:  # e.g. a second bad override, or sweep syntax compose() refuses: try with fewer
            continue
    return None
