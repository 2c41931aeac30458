"""``python -m ltxlab [group=option ...] [key=value ...]``: compose the Hydra config and run the recipe."""

from __future__ import annotations

import os

import hydra
from hydra.errors import ConfigCompositionException, OverrideParseException
from omegaconf import DictConfig

from ltxlab.config.schema import register_configs

_FULL_ERROR = "HYDRA_FULL_ERROR"


def main() -> None:
    register_configs()
    user_setting = os.environ.get(_FULL_ERROR)

    def restore_user_setting() -> None:
        if user_setting is None:
            os.environ.pop(_FULL_ERROR, None)
        else:
            os.environ[_FULL_ERROR] = user_setting

    @hydra.main(version_base="1.3", config_path="../conf", config_name="config")
    def entry(cfg: DictConfig) -> float | None:
        restore_user_setting()  # composed: from here on a failure is a crash, reported the way Hydra always did
        from ltxlab.recipe import run_from_hydra  # deferred: --help and --cfg stay fast

        return run_from_hydra(cfg)

    # Hydra prints a failed composition and exits 1 unless HYDRA_FULL_ERROR is set; then it re-raises and the
    # failure can be reported as bad input (exit 2). Catching it keeps the happy path at one composition.
    os.environ[_FULL_ERROR] = "1"
    try:
        entry()
    except (ConfigCompositionException, OverrideParseException) as exc:
        from ltxlab.config.override_errors import report_composition_error

        report_composition_error(exc)
    finally:
        restore_user_setting()


if __name__ == "__main__":
    main()
