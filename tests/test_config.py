"""The composed Hydra config: every group combination validates; the seeds' ranges are enforced."""

from __future__ import annotations

import itertools
import logging
import subprocess
import sys

import pytest

from ltxlab.config.resolution import RESOLUTIONS, bucket_size
from ltxlab.config.schema import Config
from ltxlab.config.validate import validate
from ltxlab.errors import ConfigError
from tests.conftest import CONF_DIR, REPO

GROUPS = {name: sorted(p.stem for p in (CONF_DIR / name).glob("*.yaml"))
          for name in ("mode", "resolution", "audio", "validation", "model", "lora", "optim", "deepspeed",
                       "logger", "data", "preset")}


def test_every_group_has_options() -> None:
    assert GROUPS["mode"] == ["a2v", "i2v"]
    assert GROUPS["resolution"] == ["high", "low", "medium"]
    assert GROUPS["audio"] == ["auto", "off", "on"]
    assert {"tiny", "ltx23"} <= set(GROUPS["model"])
    assert {"wandb", "none"} <= set(GROUPS["logger"])


def all_pairs(groups: dict[str, list[str]]) -> list[dict[str, str]]:
    """A greedy covering array: every option of every group appears with every option of every other group in
    at least one combination (the full product is ~1,400 compositions and took 6 minutes of the suite)."""
    names = list(groups)

    def pair(x: str, vx: str, y: str, vy: str) -> tuple[str, str, str, str]:
        return (x, vx, y, vy) if names.index(x) < names.index(y) else (y, vy, x, vx)

    uncovered = {pair(a, va, b, vb) for i, a in enumerate(names) for b in names[i + 1:]
                 for va in groups[a] for vb in groups[b]}
    rows = []
    while uncovered:
        a, va, b, vb = min(uncovered)
        row = {a: va, b: vb}
        for n in names:
            if n not in row:
                row[n] = max(groups[n], key=lambda v, n=n: sum(pair(x, row[x], n, v) in uncovered for x in row))
        uncovered -= {pair(x, row[x], y, row[y]) for i, x in enumerate(names) for y in names[i + 1:]}
        rows.append({n: row[n] for n in names})
    return rows


def test_every_pair_of_options_composes_and_validates(compose_cfg) -> None:
    rows = all_pairs(GROUPS)
    pairs = {(x, r[x], y, r[y]) for r in rows for x, y in itertools.combinations(GROUPS, 2)}
    assert all((x, vx, y, vy) in pairs for x, y in itertools.combinations(GROUPS, 2)
               for vx in GROUPS[x] for vy in GROUPS[y])  # the covering array covers
    for choice in rows:
        cfg = compose_cfg(*(f"{n}={v}" for n, v in choice.items()))
        if choice["mode"] == "a2v" and choice["audio"] == "off":
            with pytest.raises(ConfigError, match=r"audio.with_audio=false is not allowed with mode=a2v"):
                validate(cfg)
            continue
        typed = validate(cfg)
        assert isinstance(typed, Config)
        assert typed.mode.name == choice["mode"]
        assert typed.model.name == choice["model"].removesuffix("_random")  # tiny_random: tiny with random weights
        if choice["model"] == "tiny_random":
            assert typed.model.tiny_weights == ""
        assert typed.deepspeed["zero_optimization"]["stage"] == int(choice["deepspeed"][len("zero")])
        if choice["preset"] == "seed":
            assert typed.resolution.name == choice["resolution"]
    assert any(r["mode"] == "a2v" and r["audio"] == "off" for r in rows)  # the refused pair is exercised too


def test_seed_preset_gives_the_service_defaults(compose_cfg) -> None:
    cfg = validate(compose_cfg("preset=seed"))
    assert cfg.lora.rank == 32
    assert cfg.optim.number_of_steps == 2000
    assert cfg.optim.learning_rate == pytest.approx(2e-4)
    assert cfg.mode.first_frame_conditioning_p == 0.5
    assert cfg.data.number_of_frames == 89
    assert cfg.data.frame_rate == 24
    assert (cfg.resolution.name, cfg.resolution.aspect_ratio) == ("medium", "1:1")
    assert cfg.data.trigger_phrase == ""
    assert cfg.data.auto_scale_input is False
    assert cfg.data.split_input_into_scenes is True
    assert cfg.data.split_input_duration_threshold == 30.0
    assert cfg.audio.with_audio is None and cfg.audio.normalize and cfg.audio.preserve_pitch
    assert cfg.data.debug_dataset is False
    v = cfg.validation
    assert (v.samples, v.number_of_frames, v.frame_rate, v.resolution, v.aspect_ratio, v.stg_scale) == (
        [], 89, 24, "high", "1:1", 1.0)
    assert "blurry" in v.negative_prompt


def test_a2v_defaults(compose_cfg) -> None:
    cfg = validate(compose_cfg("mode=a2v", "preset=seed"))
    assert cfg.data.split_input_into_scenes is False
    assert cfg.audio.with_audio is True
    assert cfg.mode.first_frame_conditioning_p == 1.0


def test_resolution_table_matches_the_seeds() -> None:
    expected = {"low": [(512, 288), (512, 512), (288, 512)], "medium": [(768, 448), (768, 768), (448, 768)],
                "high": [(960, 544), (960, 960), (544, 960)]}
    for name, sizes in expected.items():
        assert [bucket_size(name, ar) for ar in ("16:9", "1:1", "9:16")] == sizes
    assert set(RESOLUTIONS) == set(expected)


def test_aspect_ratio_override_from_the_command_line(compose_cfg) -> None:
    cfg = validate(compose_cfg("resolution=high", "resolution.aspect_ratio=9:16", "preset=seed"))
    assert bucket_size(cfg.resolution.name, cfg.resolution.aspect_ratio) == (544, 960)


@pytest.mark.parametrize(("override", "message"), [
    ("lora.rank=12", r"lora.rank=12 is not allowed: choose one of 8, 16, 32, 64, 128"),
    ("optim.number_of_steps=99", r"optim.number_of_steps=99 is out of range: allowed 100–20000"),
    ("optim.number_of_steps=20001", r"optim.number_of_steps=20001 is out of range"),
    ("mode.first_frame_conditioning_p=1.5", r"mode.first_frame_conditioning_p=1.5 is out of range: allowed 0.0–1.0"),
    ("mode.first_frame_conditioning_p=-0.1", r"first_frame_conditioning_p=-0.1 is out of range"),
    ("data.number_of_frames=8", r"data.number_of_frames=8 is out of range: allowed 9–121"),
    ("data.number_of_frames=122", r"data.number_of_frames=122 is out of range"),
    ("data.frame_rate=7", r"data.frame_rate=7 is out of range: allowed 8–60"),
    ("data.frame_rate=61", r"data.frame_rate=61 is out of range"),
    ("data.split_input_duration_threshold=0.5",
     r"split_input_duration_threshold=0.5 is out of range: allowed 1.0–60.0"),
    ("validation.stg_scale=3.5", r"validation.stg_scale=3.5 is out of range: allowed 0.0–3.0"),
    ("validation.number_of_frames=200", r"validation.number_of_frames=200 is out of range"),
    ("validation.frame_rate=100", r"validation.frame_rate=100 is out of range"),
    ("resolution.aspect_ratio=4:3", r"resolution.aspect_ratio='4:3' is not allowed: choose one of 16:9, 1:1, 9:16"),
    ("validation.resolution=ultra", r"validation.resolution='ultra' is not allowed"),
    ("optim.learning_rate=0", r"optim.learning_rate=0.0 must be greater than 0"),
])
def test_out_of_range_values_are_rejected(compose_cfg, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(compose_cfg("preset=seed", override))


def test_validation_sample_rules(compose_cfg) -> None:
    three = "validation.samples=[{prompt:a,image_url:x.png},{prompt:b,image_url:y.png},{prompt:c,image_url:z.png}]"
    with pytest.raises(ConfigError, match="at most 2"):
        validate(compose_cfg(three))
    with pytest.raises(ConfigError, match=r"samples\[0\].image_url is required"):
        validate(compose_cfg("validation.samples=[{prompt:a}]"))
    with pytest.raises(ConfigError, match=r"samples\[0\].audio_url is required in a2v"):
        validate(compose_cfg("mode=a2v", "validation.samples=[{prompt:a,image_url:x.png}]"))


@pytest.mark.parametrize(("frames", "snapped"), [(89, 89), (90, 89), (96, 89), (97, 97), (9, 9), (16, 9), (121, 121)])
def test_frames_snap_down_and_say_so(compose_cfg, caplog, frames: int, snapped: int) -> None:
    with caplog.at_level(logging.WARNING):
        cfg = validate(compose_cfg(f"data.number_of_frames={frames}", f"validation.number_of_frames={frames}"))
    assert cfg.data.number_of_frames == snapped
    assert cfg.validation.number_of_frames == snapped
    assert (f"snapped down to {snapped}" in caplog.text) == (frames != snapped)


def test_cli_prints_the_composed_config() -> None:
    out = subprocess.run([sys.executable, "-m", "ltxlab", "--cfg", "job", "mode=a2v", "resolution=high"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "name: a2v" in out and "name: high" in out and "zero_optimization" in out


def test_cli_rejects_bad_values_before_doing_anything(tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-m", "ltxlab", "lora.rank=7", f"hydra.run.dir={tmp_path}/run"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "lora.rank=7 is not allowed" in proc.stderr
    assert not (tmp_path / "cache").exists()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".hydra", "error.json", "ltxlab.log"]


@pytest.mark.parametrize(("sweep", "params"), [
    ("rank_lr", {"lora.rank": "8,16,32", "optim.learning_rate": "1e-4,2e-4,4e-4"}),
    ("first_frame_p", {"mode.first_frame_conditioning_p": "0.0,0.5,1.0"}),
    ("rank_lr_p", {"lora.rank": "8,32,128", "optim.learning_rate": "1e-4,2e-4,4e-4",
                   "mode.first_frame_conditioning_p": "0.0,0.5,1.0"}),
    ("a2v_rank_lr", {"lora.rank": "8,16,32", "optim.learning_rate": "1e-4,2e-4,4e-4"}),
])
def test_sweeps_extend_the_main_config(sweep: str, params: dict[str, str]) -> None:
    """``ltxlab --multirun +sweep=<sweep>`` (the shipped ``sweep`` group): the grid, no fixed W&B group (each
    launch gets its own, named at run time), and every point of the grid valid."""
    from hydra import compose, initialize_config_dir

    from ltxlab.config.schema import register_configs

    register_configs()
    chosen = f"+sweep={sweep}"
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", return_hydra_config=True, overrides=[chosen])
        assert dict(cfg.hydra.sweeper.params) == params
        assert cfg.logger.group is None
        grid = itertools.product(*([f"{k}={v}" for v in values.split(",")] for k, values in params.items()))
        for point in grid:
            validate(compose(config_name="config", overrides=[chosen, *point]))
