"""Shared fixtures: the real Hydra config, composed and shrunk the way users do it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from ltxlab.config import CONF_DIR
from ltxlab.config.schema import register_configs
from tests.cli_runs import random_weights_unless_chosen

REPO = Path(__file__).resolve().parents[1]

# The suite runs on two pytest-xdist workers (`-n 2 --dist loadgroup` in pyproject.toml): most CLI runs spend half
# their time in one-threaded work (imports, PyAV, shard writing), which the other worker fills. Session fixtures
# are per worker, so every test that reads one of the expensive runs below joins that run's group and runs on the
# worker that built it; nothing is trained twice. Modules with expensive module fixtures group themselves.
SHARED_RUNS = ("demo_run", "a2v_run", "random_run")


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # One torch thread per worker and per CLI run it starts: torch's OpenMP threads spin while they wait, so
        # two 2-thread processes on 2 cores took longer than the whole suite in one process (measured: 1,104 s
        # against 1,064 s, with 70 % more CPU time).
        import torch

        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups into the test ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        run = next((name for name in SHARED_RUNS if name in getattr(item, "fixturenames", ())), None)
        if run is not None and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(run))


def pytest_collection_finish(session: pytest.Session) -> None:
    """On an xdist worker under --dist loadgroup, xdist has tagged each grouped test's id with @<group>; where it
    has not (pytest-xdist 3.8 on pytest 9.2), the groups would silently split and the shared runs train twice."""
    if getattr(session.config.option, "loadgroup", False):
        untagged = [i.nodeid for i in session.items if i.get_closest_marker("xdist_group") and "@" not in i.nodeid]
        if untagged:
            raise pytest.UsageError(f"xdist did not apply the test groups (pytest {pytest.__version__}): "
                                    f"{untagged[0]} …; see pyproject.toml's pytest pin")


@pytest.fixture(scope="session")
def compose_cfg() -> Callable[..., DictConfig]:
    register_configs()

    def _compose(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=random_weights_unless_chosen(overrides, short=False))

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
    """The demo on random weights, cut to 100 steps (``tests.cli_runs.SHORT_RANDOM``, W&B off): the baseline of
    the cache, resume and fault tests, whose mechanics do not depend on the pretrained weights (and run faster on
    the smaller family)."""
    from tests.cli_runs import cli

    run_dir = tmp_path_factory.mktemp("random") / "run"
    cli(run_dir, cache_dir)
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
