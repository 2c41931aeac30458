"""``python -m ltxlab [group=option ...] [key=value ...]``: compose the Hydra config and run the recipe.

Also the entry under every launcher: ``torchrun --nproc_per_node N -m ltxlab …``, ``deepspeed --module ltxlab …``
(whose ``--local_rank=N`` is taken out of argv before Hydra parses it) and SLURM tasks (``srun``; Hydra's submitit
launcher calls the task function directly).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable

import hydra
from hydra.errors import ConfigCompositionException, OverrideParseException
from omegaconf import DictConfig

from ltxlab import distributed
from ltxlab.config import CONF_DIR
from ltxlab.config.schema import register_configs

_FULL_ERROR = "HYDRA_FULL_ERROR"
EXIT_SIGPIPE = 141  # 128 + SIGPIPE: what a shell reports for a writer whose pipe closed
_LOCAL_RANK_ARG = re.compile(r"--local[_-]rank(?:=(\d+))?$")


def accept_launcher_args(argv: list[str]) -> list[str]:
    """``argv`` without the ``--local_rank=N`` (or ``--local_rank N``) the deepspeed launcher appends, which
    Hydra would reject; LOCAL_RANK is set from it when the launcher did not export it."""
    kept: list[str] = []
    args = iter(argv)
    for arg in args:
        match = _LOCAL_RANK_ARG.match(arg)
        if match is None:
            kept.append(arg)
            continue
        value = match.group(1) if match.group(1) is not None else next(args, "0")
        os.environ.setdefault("LOCAL_RANK", value)
    return kept


def prepare_launch(argv: list[str]) -> list[str]:
    """Before Hydra runs: the launcher's arguments, the process group, and one launch time for every rank (it
    names the run directory). Ranks other than 0 do not write Hydra's ``.hydra/`` copies of the config."""
    argv = accept_launcher_args(argv)
    world = distributed.launched_world()
    if world.is_distributed:
        distributed.setup()
        distributed.agree_launch_time()
        if not world.is_main:
            argv.append("hydra.output_subdir=null")
    return argv


def hydra_entry(task: Callable[[DictConfig], float | None]) -> None:
    """Compose the config from ``ltxlab/conf/`` and run ``task`` on it; composition errors are bad input (exit 2)."""
    register_configs()
    sys.argv[1:] = prepare_launch(sys.argv[1:])
    user_setting = os.environ.get(_FULL_ERROR)

    def restore_user_setting() -> None:
        if user_setting is None:
            os.environ.pop(_FULL_ERROR, None)
        else:
            os.environ[_FULL_ERROR] = user_setting

    # An absolute config path (the package's ltxlab/conf): the task function is also defined here when another
    # entry point (ltxlab.encode) imports this module, and runs from any working directory.
    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
    def entry(cfg: DictConfig) -> float | None:
        restore_user_setting()  # composed: from here on a failure is a crash, reported the way Hydra always did
        register_configs()  # a submitit task runs this function in a fresh process: resolvers are needed there
        return task(cfg)

    # Hydra prints a failed composition and exits 1 unless HYDRA_FULL_ERROR is set; then it re-raises and the
    # failure can be reported as bad input (exit 2). Catching it keeps the happy path at one composition.
    os.environ[_FULL_ERROR] = "1"
    try:
        entry()
    except (ConfigCompositionException, OverrideParseException) as exc:
        from ltxlab.config.override_errors import report_composition_error

        report_composition_error(exc)
    except BrokenPipeError:  # stdout's reader went away (`ltxlab --help | head -3`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit flush must not fail again
        sys.exit(EXIT_SIGPIPE)
    except OSError as exc:  # Hydra could not create the run directory or its .hydra/ and log files
        from ltxlab.errors import report_failure

        report_failure(exc, None)
    finally:
        restore_user_setting()


def _train(cfg: DictConfig) -> float | None:
    from ltxlab.models.quantize import quiet_optional_backends

    quiet_optional_backends()  # before the recipe's imports pull in diffusers, which imports torchao/bitsandbytes
    from ltxlab.recipe import run_from_hydra  # deferred: --help and --cfg stay fast

    return run_from_hydra(cfg)


def main() -> None:
    hydra_entry(_train)


if __name__ == "__main__":
    main()
