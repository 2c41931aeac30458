"""Typed errors shared by every stage.

`InputError` and its subclasses mean "the user's request, config or data is wrong" — the seeds' HTTP 422
class. Anything else that escapes is a bug or an environment failure.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import NoReturn


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


EXIT_INPUT = 2  # bad input; 1 stays "crash" (Hydra's and Python's), 75 "stopped early, resumable"


def write_error_file(run_dir: Path, status: int, kind: str, detail: str) -> Path:
    """The seeds' failed-request record: ``error.json`` with the HTTP-style status; a failure bills 0 units."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "error.json"
    path.write_text(json.dumps({"status": status, "error": kind, "detail": detail, "billable_units": 0}))
    return path


def report_input_error(err: InputError, run_dir: Path | None) -> NoReturn:
    """Report bad input the one way the CLI does: one ``error:`` line on stderr, ``error.json`` (the seeds' 422)
    in ``run_dir`` when there is one, exit code 2. Nothing is trained."""
    if run_dir is not None:
        write_error_file(run_dir, err.code, type(err).__name__, str(err))
    print(f"error: {err}", file=sys.stderr)
    sys.exit(EXIT_INPUT)
