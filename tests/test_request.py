"""The seeds' request API (``python -m ltxlab.request``): the one mapping table, per-mode defaults, rejections.

The expected names and defaults below are written from the seeds' text (/work/shared/seeds/*.txt), not from
ltxlab's table, so a table entry that drifts from the seeds fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from ltxlab.config.validate import validate
from ltxlab.errors import ConfigError
from ltxlab.request import PARAMETERS, RequestError, hydra_string, request_overrides
from tests.cli_runs import REPO

BUILT_IN = object()  # "Default: a built-in quality negative prompt"
# The seeds' "Input Parameters Reference" of each endpoint: name → default (None where the seeds give none).
SEED_I2V = {
    "training_data_url": None, "trigger_phrase": "", "rank": 32, "number_of_steps": 2000, "learning_rate": 0.0002,
    "first_frame_conditioning_p": 0.5, "number_of_frames": 89, "frame_rate": 24, "resolution": "medium",
    "aspect_ratio": "1:1", "auto_scale_input": False, "split_input_into_scenes": True,
    "split_input_duration_threshold": 30.0, "with_audio": None, "audio_normalize": True,
    "audio_preserve_pitch": True, "validation": [], "validation_negative_prompt": BUILT_IN,
    "validation_number_of_frames": 89, "validation_frame_rate": 24, "validation_resolution": "high",
    "validation_aspect_ratio": "1:1", "stg_scale": 1.0, "debug_dataset": False,
}
SEED_A2V = {k: v for k, v in SEED_I2V.items() if k not in ("first_frame_conditioning_p", "with_audio")}
SEED_A2V["split_input_into_scenes"] = False  # "Off by default for this mode"


def _get(cfg: object, key: str) -> object:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _composed(compose_cfg, job: dict, *extra: str):
    return validate(compose_cfg(*request_overrides(job), *extra))


def test_the_table_has_exactly_the_seeds_parameters() -> None:
    assert set(PARAMETERS) == set(SEED_I2V)
    assert {n for n, p in PARAMETERS.items() if "a2v" in p.modes} == set(SEED_A2V)


@pytest.mark.parametrize(("mode", "seed"), [("i2v", SEED_I2V), ("a2v", SEED_A2V)])
def test_defaults_are_the_seeds_defaults_per_mode(compose_cfg, mode: str, seed: dict) -> None:
    cfg = _composed(compose_cfg, {"mode": mode, "training_data_url": "/data/clips.zip"})
    for name, default in seed.items():
        if name == "training_data_url":
            continue
        value = _get(cfg, PARAMETERS[name].key)
        if name == "validation":
            value = list(value)
        if default is BUILT_IN:
            assert isinstance(value, str) and "blurry" in value, name
            continue
        assert value == default, name
    assert cfg.mode.name == mode and cfg.data.source == "/data/clips.zip"
    if mode == "a2v":
        assert cfg.mode.first_frame_conditioning_p == 1.0  # not a parameter: the start image is always held


def test_every_parameter_reaches_its_config_key(compose_cfg) -> None:
    job = {"mode": "i2v", "training_data_url": "https://example.com/my_dataset.zip", "trigger_phrase": "tronlog0",
           "rank": 16, "number_of_steps": 300, "learning_rate": 0.0004, "first_frame_conditioning_p": 0.8,
           "number_of_frames": 49, "frame_rate": 30, "resolution": "high", "aspect_ratio": "16:9",
           "auto_scale_input": True, "split_input_into_scenes": False, "split_input_duration_threshold": 12.5,
           "with_audio": False, "audio_normalize": False, "audio_preserve_pitch": False,
           "validation": [{"prompt": "tronlog0 rotating slowly", "image_url": "https://example.com/start.png"}],
           "validation_negative_prompt": "ugly", "validation_number_of_frames": 33, "validation_frame_rate": 12,
           "validation_resolution": "low", "validation_aspect_ratio": "9:16", "stg_scale": 0.0,
           "debug_dataset": True}
    assert set(job) - {"mode"} == set(SEED_I2V)
    cfg = _composed(compose_cfg, job)
    for name, value in job.items():
        if name in ("mode", "validation"):
            continue
        assert _get(cfg, PARAMETERS[name].key) == value, name
    (sample,) = cfg.validation.samples
    assert (sample.prompt, sample.image_url, sample.audio_url) == ("tronlog0 rotating slowly",
                                                                   "https://example.com/start.png", None)


def test_a2v_validation_entries_carry_audio(compose_cfg) -> None:
    entry = {"prompt": "a person speaking to camera", "image_url": "face.png", "audio_url": "speech.wav"}
    cfg = _composed(compose_cfg, {"mode": "a2v", "training_data_url": "x.zip", "validation": [entry]})
    assert cfg.validation.samples[0].audio_url == "speech.wav"


@pytest.mark.parametrize(("job", "message"), [
    ({"mode": "a2v", "training_data_url": "x.zip", "first_frame_conditioning_p": 0.3},
     "first_frame_conditioning_p is a parameter of the i2v endpoint only, not a2v"),
    ({"mode": "a2v", "training_data_url": "x.zip", "with_audio": True},
     "with_audio is a parameter of the i2v endpoint only, not a2v"),
    ({"training_data_url": "x.zip", "validation": [{"image_url": "a.png", "audio_url": "b.wav"}]},
     "validation[0].audio_url is for mode=a2v only (allowed: prompt, image_url)"),
    ({"mode": "a2v", "training_data_url": "x.zip", "validation": [{"prompt": "p", "image_url": "a.png"}]},
     "validation[0].audio_url is required in a2v"),
    ({"training_data_url": "x.zip", "validation": [{"prompt": "no image"}]}, "validation[0].image_url is required"),
    ({"training_data_url": "x.zip", "validation": [{"image_url": "a.png", "seed": 1}]},
     "validation[0].seed is not a validation field"),
    ({"training_data_url": "x.zip", "learning_rate_typo": 1e-4}, "learning_rate_typo is not a parameter"),
    ({"training_data_url": "x.zip", "rank": "32"}, 'rank must be an integer, got "32"'),
    ({"training_data_url": "x.zip", "rank": 32.5}, "rank must be an integer"),
    ({"training_data_url": "x.zip", "debug_dataset": "yes"}, "debug_dataset must be a boolean"),
    ({"training_data_url": "x.zip", "learning_rate": True}, "learning_rate must be a number"),
    ({"training_data_url": "x.zip", "validation": {"prompt": "p"}}, "validation must be an array of objects"),
    ({"trigger_phrase": "t"}, "training_data_url is required"),
    ({"mode": "t2v", "training_data_url": "x.zip"}, "mode='t2v' is not allowed"),
    (["not", "an", "object"], "the request must be a JSON object"),
])
def test_bad_requests_are_rejected(job: object, message: str) -> None:
    with pytest.raises(RequestError, match=None) as info:
        request_overrides(job)
    assert message in str(info.value)
    assert info.value.code == 422


@pytest.mark.parametrize(("job", "key"), [
    ({"training_data_url": "x.zip", "rank": 7}, "lora.rank"),
    ({"training_data_url": "x.zip", "number_of_steps": 50}, "optim.number_of_steps"),
    ({"training_data_url": "x.zip", "resolution": "ultra"}, "resolution.name"),
    ({"training_data_url": "x.zip", "first_frame_conditioning_p": 1.5}, "mode.first_frame_conditioning_p"),
    ({"training_data_url": "x.zip", "stg_scale": 4.0}, "validation.stg_scale"),
])
def test_ranges_are_the_configs_ranges(compose_cfg, job: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        _composed(compose_cfg, job)


@pytest.mark.parametrize("text", ["tronlog0", "it's, [a] {b} = c", "ends with \\", "\\'", "${oc.env:HOME}",
                                  "\\${x}", "ünïcode ☃", ""])
def test_strings_reach_the_config_verbatim(text: str) -> None:
    override = OverridesParser.create().parse_override(f"data.trigger_phrase={hydra_string(text)}")
    node = OmegaConf.create({"data": {"trigger_phrase": override.value()}})
    assert node.data.trigger_phrase == text  # never an interpolation (no environment read through a request)


def _request(tmp_path: Path, job: object, *overrides: str) -> subprocess.CompletedProcess[str]:
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(job))
    env = dict(os.environ, PYTHONPATH=str(REPO), WANDB_MODE="offline")
    return subprocess.run([sys.executable, "-m", "ltxlab.request", str(job_file), *overrides], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.parametrize(("job", "detail"), [
    ({"mode": "a2v", "training_data_url": "x.zip", "first_frame_conditioning_p": 0.3}, "i2v endpoint only"),
    ({"training_data_url": "x.zip", "rank": 7}, "lora.rank=7 is not allowed"),
    ({"training_data_url": "https://127.0.0.1:9/none.zip", "number_of_steps": 100}, "127.0.0.1"),
])
def test_failed_requests_write_error_json_and_bill_nothing(tmp_path: Path, job: dict, detail: str) -> None:
    run_dir = tmp_path / "run"
    proc = _request(tmp_path, job, f"hydra.run.dir={run_dir}", "logger=none")
    assert proc.returncode == 2, proc.stderr[-2000:]
    error = json.loads((run_dir / "error.json").read_text())
    assert error["status"] == 422 and error["billable_units"] == 0 and detail in error["detail"]
    assert not (run_dir / "result.json").exists()


def test_an_a2v_request_trains_and_writes_the_seeds_outputs(tmp_path: Path, cache_dir: Path) -> None:
    """A valid a2v request as the seeds write it (a zip of groups, a validation entry with image and audio),
    shrunk to the minimum steps: result.json names the seeds' outputs and bills max(100, steps)."""
    from ltxlab.data.sample import make_a2v_dataset, zip_dir

    make_a2v_dataset(tmp_path / "groups", num_groups=4)
    archive = zip_dir(tmp_path / "groups", tmp_path / "a2v_groups.zip")
    assets = REPO / "ltxlab" / "assets" / "validation"
    job = {"mode": "a2v", "training_data_url": str(archive), "trigger_phrase": "", "rank": 8, "number_of_steps": 100,
           "learning_rate": 0.001, "number_of_frames": 9, "resolution": "low", "debug_dataset": True,
           "validation": [{"prompt": "a square pulsing", "image_url": str(assets / "a2v_start.png"),
                           "audio_url": str(assets / "a2v_audio.wav")}],
           "validation_resolution": "low", "validation_number_of_frames": 9}
    run_dir = tmp_path / "run"
    proc = _request(tmp_path, job, "model=tiny_random", f"hydra.run.dir={run_dir}", f"data.cache_dir={cache_dir}",
                    "logger=none", "logger.progress_bar=false", "validation.inference_steps=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["billable_units"] == 100
    for output, name in (("lora_file", "lora.safetensors"), ("config_file", "config.json"), ("video", "video.mp4"),
                         ("debug_dataset", "debug_dataset.zip")):
        assert result[output] == str(run_dir / name) and Path(result[output]).exists(), output
    config = json.loads((run_dir / "config.json").read_text())
    assert config["training_type"] == "a2v" and config["lora_rank"] == 8 and config["number_of_frames"] == 9
    assert not (run_dir / "error.json").exists()


def test_config_refuses_an_i2v_value_under_a2v(compose_cfg) -> None:
    """``mode=a2v mode.first_frame_conditioning_p=0.3`` is a 422, never silently trained at 1.0 (a p-sweep under
    a2v would otherwise train one job several times)."""
    with pytest.raises(ConfigError, match="applies to mode=i2v only"):
        validate(compose_cfg("mode=a2v", "mode.first_frame_conditioning_p=0.3"))
    assert validate(compose_cfg("mode=a2v", "mode.first_frame_conditioning_p=1.0")).mode.first_frame_conditioning_p == 1
