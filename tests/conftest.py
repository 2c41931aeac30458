"""Shared fixtures: the real Hydra config, composed and shrunk the way users do it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from ltxlab.config import CONF_DIR
from ltxlab.config.schema import register_configs
from tests.cli_runs import random_weights_unless_chosen

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def compose_cfg() -> Callable[..., DictConfig]:
    register_configs()

    def _compose(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=random_weights_unless_chosen(overrides))

    return _compose


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One latent cache for every CLI run of the session: runs after the first reuse its shards."""
    return tmp_path_factory.mktemp("latent-cache")


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, cache_dir) -> Path:
    """``python -m ltxlab`` with the embedded defaults (W&B offline, progress bars off): the pretrained tiny world
    (``model=tiny``), the i2v sample dataset, previews beside the base model."""
    from tests.cli_runs import cli

    run_dir = tmp_path_factory.mktemp("demo") / "run"
    cli(run_dir, cache_dir, "model=tiny", logger="wandb")
    return run_dir


@pytest.fixture(scope="session")
def random_run(tmp_path_factory, cache_dir) -> Path:
    """The demo on random weights (``model=tiny_random``, W&B off): the baseline of the cache, resume and fault
    tests, whose mechanics do not depend on the pretrained weights (and run faster on the smaller family)."""
    from tests.cli_runs import cli

    run_dir = tmp_path_factory.mktemp("random") / "run"
    cli(run_dir, cache_dir, "model=tiny_random")
    return run_dir


@pytest.fixture(scope="session")
def a2v_run(tmp_path_factory, cache_dir) -> Path:
    """``python -m ltxlab mode=a2v``: the a2v demo on the pretrained tiny world, previews included. Shared by the
    a2v CLI checks (frozen audio, the reel's muxed track) and the a2v behaviour test (does the LoRA follow the
    audio?), so the suite trains it once."""
    from tests.cli_runs import cli

    run_dir = tmp_path_factory.mktemp("a2v-demo") / "run"
    cli(run_dir, cache_dir, "mode=a2v", "model=tiny")
    return run_dir
