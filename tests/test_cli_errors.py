"""Overrides Hydra rejects while composing are bad input: one ``error:`` line, error.json (422), exit code 2.

Every run here fails (or stops) before training, so the file runs in seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_runs import REPO


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", WANDB_MODE="offline")
    env.pop("HYDRA_FULL_ERROR", None)  # the developer's debug setting must not change what is tested
    return env


def _ltxlab(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ltxlab", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=_env())


def _error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize(("override", "message"), [
    ("data.auto_scale_input=maybe", "data.auto_scale_input=maybe is not a boolean"),
    ("data.with_audio=true", "data.with_audio is not a config key (did you mean audio.with_audio?)"),
    ("resolution=ultra", "resolution=ultra: no such option (choose from high, low, medium)"),
    ("optim.number_of_steps=many", "optim.number_of_steps=many is not an integer"),
])
def test_override_hydra_rejects_is_a_422(tmp_path: Path, override: str, message: str) -> None:
    run_dir = tmp_path / "run"
    proc = _ltxlab(tmp_path, override, f"hydra.run.dir={run_dir}")
    assert proc.returncode == 2, proc.stderr
    assert _error_lines(proc) == [f"error: {message}"]
    error = json.loads((run_dir / "error.json").read_text())
    assert error == {"status": 422, "error": "ConfigError", "detail": message, "billable_units": 0}


def test_error_json_lands_in_the_default_run_dir(tmp_path: Path) -> None:
    proc = _ltxlab(tmp_path, "lora.rank=big")  # no hydra.run.dir: outputs/<date>/<time>, as for a normal run
    assert proc.returncode == 2 and _error_lines(proc) == ["error: lora.rank=big is not an integer"]
    (error_file,) = tmp_path.glob("outputs/*/*/error.json")
    assert json.loads(error_file.read_text())["status"] == 422


def test_bad_swept_value_writes_error_json_in_the_sweep_dir(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    proc = _ltxlab(tmp_path, "--multirun", "data.auto_scale_input=true,maybe", f"hydra.sweep.dir={sweep_dir}")
    assert proc.returncode == 2 and _error_lines(proc) == ["error: data.auto_scale_input=maybe is not a boolean"]
    assert json.loads((sweep_dir / "error.json").read_text())["status"] == 422
    assert sorted(p.name for p in sweep_dir.iterdir()) == ["error.json", "multirun.yaml"]  # no job ran


def test_cfg_job_reports_a_bad_override_without_writing_anything(tmp_path: Path) -> None:
    proc = _ltxlab(tmp_path, "--cfg", "job", "data.with_audio=true")
    assert proc.returncode == 2
    assert _error_lines(proc) == ["error: data.with_audio is not a config key (did you mean audio.with_audio?)"]
    assert not list(tmp_path.iterdir())  # --cfg never makes a run dir, not even to report


def test_cfg_job_still_prints_the_config(tmp_path: Path) -> None:
    proc = _ltxlab(tmp_path, "--cfg", "job", "audio.with_audio=true")
    assert proc.returncode == 0, proc.stderr
    assert "with_audio: true" in proc.stdout and "error" not in proc.stderr


def test_a_crash_in_the_run_keeps_exit_code_1(tmp_path: Path) -> None:
    # The recipe is stubbed to raise: a bug, not bad input. It must also see the caller's HYDRA_FULL_ERROR (unset).
    script = (
        "import os, runpy, sys, types\n"
        "def boom(cfg):\n"
        "    print('task sees HYDRA_FULL_ERROR =', os.environ.get('HYDRA_FULL_ERROR'), file=sys.stderr)\n"
        "    raise RuntimeError('kaboom')\n"
        "sys.modules['ltxlab.recipe'] = types.SimpleNamespace(run_from_hydra=boom)\n"
        f"sys.argv = ['ltxlab', 'hydra.run.dir={tmp_path / 'run'}']\n"
        "runpy.run_module('ltxlab', run_name='__main__')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env=_env())
    assert proc.returncode == 1
    assert "task sees HYDRA_FULL_ERROR = None" in proc.stderr and "RuntimeError: kaboom" in proc.stderr
    assert "error:" not in proc.stderr and not (tmp_path / "run" / "error.json").exists()


def test_an_appended_unknown_key_is_refused_not_dropped(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = _ltxlab(tmp_path, "+data.with_audio=true", f"hydra.run.dir={run_dir}")
    message = "data.with_audio is not a config key (did you mean audio.with_audio?)"
    assert proc.returncode == 2 and _error_lines(proc) == [f"error: {message}"]
    assert json.loads((run_dir / "error.json").read_text())["detail"] == message
