"""ltxlab installs like a package: the Hydra config tree (every group, the sweeps) and the assets ship inside it,
the console scripts resolve, and shell completion answers for the installed ``ltxlab`` command."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from ltxlab.config import CONF_DIR
from ltxlab.config.schema import register_configs
from ltxlab.config.validate import validate
from tests.cli_runs import REPO

SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
SWEEPS = sorted(p.stem for p in (CONF_DIR / "sweep").glob("*.yaml"))
PACKAGE = REPO / "ltxlab"


def _compose(*overrides: str, hydra: bool = False):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra)


def test_the_config_tree_lives_in_the_package() -> None:
    assert CONF_DIR == PACKAGE / "conf" and (CONF_DIR / "config.yaml").is_file()
    assert {"rank_lr", "first_frame_p", "rank_lr_p", "a2v_rank_lr", "optuna", "optuna_a2v"} <= set(SWEEPS)
    assert {"slurm", "slurm_sweep"} <= {p.stem for p in (CONF_DIR / "hydra" / "launcher").glob("*.yaml")}


@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_sweep_composes_through_the_group(sweep: str) -> None:
    """``ltxlab --multirun +sweep=<name>``: found in the package (no --config-dir), it names the W&B group
    (runtime choice), has a search space, and every grid value (Optuna: the default point) validates."""
    chosen = f"+sweep={sweep}"
    hydra_cfg = _compose(chosen, hydra=True).hydra
    assert hydra_cfg.runtime.choices.sweep == sweep
    params = dict(hydra_cfg.sweeper.params)
    assert params, f"{sweep} sweeps nothing"
    if hydra_cfg.sweeper._target_.endswith("OptunaSweeper"):
        assert hydra_cfg.sweeper.direction == "minimize"
        validate(_compose(chosen))
        return
    for key, values in params.items():  # each axis value on its own: test_config checks whole grids
        for value in values.split(","):
            validate(_compose(chosen, f"{key}={value}"))


def test_both_slurm_launchers_compose() -> None:
    sweep = _compose("+sweep=rank_lr", "hydra/launcher=slurm_sweep", hydra=True).hydra.launcher
    multi_gpu = _compose("hydra/launcher=slurm", hydra=True).hydra.launcher
    assert sweep._target_.endswith("SlurmLauncher") and sweep.gpus_per_node == 1 and sweep.array_parallelism == 8
    assert multi_gpu._target_.endswith("SlurmLauncher") and multi_gpu.tasks_per_node == multi_gpu.gpus_per_node == 8


def test_console_scripts_resolve_to_callables() -> None:
    assert set(SCRIPTS) == {"ltxlab", "ltxlab-generate", "ltxlab-compare", "ltxlab-request"}
    for name, target in SCRIPTS.items():
        entry = EntryPoint(name=name, value=target, group="console_scripts").load()
        assert callable(entry) and entry.__name__ == "main", target


def test_the_wheel_ships_the_config_tree_the_assets_and_the_scripts(tmp_path: Path) -> None:
    """``pip wheel --no-deps``: every yaml of ltxlab/conf (config.yaml, each group, the sweeps, the launchers) and
    every validation asset, and the four console scripts declared. Built from a copy so no build/ or egg-info lands
    in the shared working tree; no build isolation, so it needs no package index."""
    source = tmp_path / "source"
    shutil.copytree(PACKAGE, source / "ltxlab", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    str(source), "-w", str(tmp_path / "wheel")], check=True, timeout=300, capture_output=True)
    (wheel,) = (tmp_path / "wheel").glob("ltxlab-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        declared = configparser.ConfigParser()
        declared.read_string(archive.read(entry_points).decode())
    shipped = {f"ltxlab/{p.relative_to(PACKAGE).as_posix()}" for p in (PACKAGE / "conf").rglob("*.yaml")}
    assets = {f"ltxlab/{p.relative_to(PACKAGE).as_posix()}" for p in (PACKAGE / "assets").rglob("*") if p.is_file()}
    assert "ltxlab/conf/config.yaml" in names and "ltxlab/conf/sweep/rank_lr.yaml" in names
    assert shipped - names == set() and len(shipped) > 30
    assert assets and assets - names == set()
    assert dict(declared["console_scripts"]) == SCRIPTS


def _console_script(bin_dir: Path, name: str) -> Path:
    """What pip writes for a console script: a file named ``name`` (not ``*.py``) running the entry point."""
    module, _, func = SCRIPTS[name].partition(":")
    script = bin_dir / name
    script.write_text(f"#!{sys.executable}\nimport sys\nfrom {module} import {func}\nsys.exit({func}())\n")
    script.chmod(0o755)
    return script


def test_bash_completion_for_the_ltxlab_command(tmp_path: Path) -> None:
    """The documented ``eval "$(ltxlab -sc install=bash)"`` registers completion for ``ltxlab``; bash's completion
    function (COMP_LINE, as the shell sets it) then offers the groups, a group's options and the sweeps — run
    from a directory with no conf/ in it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _console_script(bin_dir, "ltxlab")
    complete = 'COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}; COMP_CWORD=1; hydra_bash_completion; echo "${COMPREPLY[*]}"'
    script = f'eval "$(ltxlab -sc install=bash)"\ncomplete -p ltxlab\ncompletions() {{ {complete}; }}\n' + "".join(
        f'completions "{line}"\n' for line in ("ltxlab ", "ltxlab mode=", "ltxlab +sweep="))
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(REPO))
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    registered, groups, modes, sweeps = proc.stdout.strip().splitlines()
    assert registered.endswith("-F hydra_bash_completion ltxlab")
    assert {"mode=", "resolution=", "lora.", "sweep=", "preset="} <= set(groups.split())
    assert modes.split() == ["mode=a2v", "mode=i2v"]
    assert sweeps.split() == [f"+sweep={s}" for s in SWEEPS]


def test_help_into_a_closed_pipe_exits_quietly() -> None:
    """``ltxlab --help | head -1``: the reader may be gone before the help is written; no ``error: Broken pipe``."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has already exited
    try:
        proc = subprocess.run([sys.executable, "-m", "ltxlab", "--help"], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    finally:
        os.close(write_end)
    assert proc.returncode == 141 and "error" not in proc.stderr.lower(), proc.stderr
