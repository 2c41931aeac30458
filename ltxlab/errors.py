"""Typed errors shared by every stage.

`InputError` and its subclasses mean "the user's request, config or data is wrong" — the seeds' HTTP 422
class. Anything else that escapes is a bug or an environment failure.
"""

from __future__ import annotations

import contextlib
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


class TrainingDiverged(LtxlabError):
    """Training produced non-finite losses, gradients or LoRA weights; nothing is exported."""

    code = 500


class CacheCorrupt(LtxlabError):
    """A latent cache failed verification and cannot be rebuilt (its dataset source is gone)."""

    code = 500


# Exit codes: 1 stays "crash" (Hydra's and Python's), 75 "stopped early, resumable" (recipe.py).
EXIT_INPUT = 2  # bad input (the seeds' 422)
EXIT_DIVERGED = 3  # non-finite training aborted
EXIT_CACHE = 4  # a corrupt cache that cannot be rebuilt
EXIT_OS = 74  # EX_IOERR: the file system refused (read-only, permission, disk full, missing path)


def write_error_file(run_dir: Path, status: int, kind: str, detail: str) -> Path:
    """The seeds' failed-request record: ``error.json`` with the HTTP-style status; a failure bills 0 units."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "error.json"
    path.write_text(json.dumps({"status": status, "error": kind, "detail": detail, "billable_units": 0}))
    return path


def os_error_message(err: OSError) -> str:
    """``/runs/a/result.json: Read-only file system`` — the path(s) and the system's reason, on one line."""
    reason = err.strerror or str(err) or type(err).__name__
    paths = [str(p) for p in (err.filename, err.filename2) if p]
    return f"{' → '.join(paths)}: {reason}" if paths else reason


def print_error_line(detail: str) -> None:
    """Write ``error: <detail>`` and its newline in one write: every rank of a multi-process job reports, and
    separate writes of text and newline to a shared pipe can interleave into one garbled line."""
    sys.stderr.write(f"error: {detail}\n")
    sys.stderr.flush()


def report_failure(err: BaseException, run_dir: Path | None) -> NoReturn:
    """Report a failure that is not bad input and not a bug — an OS error, non-finite training, a cache that
    cannot be rebuilt — as one ``error:`` line, ``error.json`` where it can be written, and its own exit code."""
    if isinstance(err, OSError):
        detail, status, code = os_error_message(err), 500, EXIT_OS
    elif isinstance(err, TrainingDiverged | CacheCorrupt):
        detail, status = str(err), err.code
        code = EXIT_DIVERGED if isinstance(err, TrainingDiverged) else EXIT_CACHE
    else:
        raise err
    if run_dir is not None:
        with contextlib.suppress(OSError):  # the run directory itself may be what failed: stderr still reports
            write_error_file(run_dir, status, type(err).__name__, detail)
    print_error_line(detail)
    sys.exit(code)


def report_input_error(err: InputError, run_dir: Path | None) -> NoReturn:
    """Report bad input the one way the CLI does: one ``error:`` line on stderr, ``error.json`` (the seeds' 422)
    in ``run_dir`` when there is one, exit code 2. Nothing is trained."""
    if run_dir is not None:
        write_error_file(run_dir, err.code, type(err).__name__, str(err))
    print_error_line(str(err))
    sys.exit(EXIT_INPUT)
