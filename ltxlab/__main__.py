"""``python -m ltxlab [group=option ...] [key=value ...]``: compose the Hydra config and run the recipe."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from ltxlab.config.schema import register_configs


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def _hydra_entry(cfg: DictConfig) -> float | None:
    from ltxlab.recipe import run_from_hydra  # deferred: --help and --cfg stay fast

    return run_from_hydra(cfg)


def main() -> None:
    register_configs()
    _hydra_entry()


if __name__ == "__main__":
    main()
