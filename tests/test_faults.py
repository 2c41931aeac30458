"""Faults that need no training run: value bounds, OS errors (read-only or full file systems), resume refusals,
strict result.json, the deterministic sample dataset and the cache's verification."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ltxlab.config.validate import validate
from ltxlab.data.cache import build_once, cached_or_build, shard_checksum, verify_shards
from ltxlab.data.sample import GENERATOR_VERSION, make_a2v_dataset, make_i2v_dataset
from ltxlab.data.shards import ShardIndex
from ltxlab.errors import EXIT_INPUT, EXIT_OS, CacheCorrupt, ConfigError
from ltxlab.export import RunOutputs
from ltxlab.train.resume import check_compatible, write_record
from tests.cli_runs import REPO, random_weights_unless_chosen


@pytest.mark.parametrize(("override", "message"), [
    ("optim.learning_rate=1e6", "optim.learning_rate=1000000.0 is out of range: allowed 0.0–0.01"),
    ("optim.beta2=1.0", "optim.beta2=1.0 is out of range: allowed 0.0–0.9999"),
    ("optim.weight_decay=5", "optim.weight_decay=5.0 is out of range: allowed 0.0–1.0"),
    ("optim.eps=0", "optim.eps=0.0 is out of range: allowed 1e-12–0.001"),
    ("optim.max_grad_norm=1e9", "optim.max_grad_norm=1000000000.0 is out of range: allowed 0.0–1000.0"),
])
def test_optimizer_values_have_upper_bounds(compose_cfg, override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg(override))
    assert str(err.value) == message


def test_result_json_is_strict_json(tmp_path: Path) -> None:
    outputs = RunOutputs(lora_file="l", lora_file_diffusers="d", config_file="c", video=None, debug_dataset=None,
                         billable_units=100, final_loss=math.nan, val_loss=math.inf)

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    result = json.loads(outputs.write(tmp_path).read_text(), parse_constant=refuse)
    assert result["final_loss"] is None and result["val_loss"] is None


def test_world_size_change_is_refused_by_name(tmp_path: Path) -> None:
    settings = {"optim.learning_rate": 0.001, "data.cache_key": "abc"}
    write_record(tmp_path, settings, world_size=2)
    check_compatible(tmp_path, settings, world_size=2)
    with pytest.raises(ConfigError, match=r"written by 2 process\(es\) and this run has 1: resume with 2"):
        check_compatible(tmp_path, settings, world_size=1)
    with pytest.raises(ConfigError, match=r"optim.learning_rate: 0.001 → 0.002"):
        check_compatible(tmp_path, settings | {"optim.learning_rate": 0.002}, world_size=2)


# ---------------------------------------------------------------------------------------------------- sample data


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_sample_dataset_is_byte_identical_between_generations(tmp_path: Path) -> None:
    # torch is loaded in this process: x264's macroblock-tree rate control then varied the bitstream run to run.
    for name in ("a", "b"):
        make_i2v_dataset(tmp_path / name / "i2v", num_clips=8, seconds=1.0)
        make_a2v_dataset(tmp_path / name / "a2v", num_groups=3, seconds=1.0, start_video_groups=1)
    first, second = _tree_bytes(tmp_path / "a"), _tree_bytes(tmp_path / "b")
    assert first.keys() == second.keys() and len(first) == 8 * 2 + 3 + 2 * 4
    assert [k for k in first if first[k] != second[k]] == []


# ---------------------------------------------------------------------------------------------------- cache builds


def _fake_index(directory: Path, shards: dict[str, bytes]) -> ShardIndex:
    for name, data in shards.items():
        (directory / name).write_bytes(data)
    return ShardIndex(fingerprint="k", shards=sorted(shards), counts=[1] * len(shards), with_audio=False,
                      is_image=False, video_latent_shape=[8, 1, 2, 2], audio_latent_shape=None, fps=24.0)


def test_corrupt_cache_is_rebuilt_or_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    builds: list[str] = []

    def build(tmp: Path) -> ShardIndex:
        builds.append(tmp.name)
        return _fake_index(tmp, {"shard-000000.tar": b"a" * 1000, "shard-000001.tar": b"b" * 1000})

    folder, reused = cached_or_build(tmp_path, "key", build)
    assert not reused and verify_shards(folder) is None
    assert ShardIndex.load(folder).extra["checksums"]["shard-000001.tar"] == shard_checksum(folder / "shard-000001.tar")
    assert cached_or_build(tmp_path, "key", build) == (folder, True) and len(builds) == 1

    with (folder / "shard-000001.tar").open("r+b") as f:  # bytes overwritten in place: same size
        f.seek(500)
        f.write(b"X")
    assert verify_shards(folder) == f"{folder / 'shard-000001.tar'} does not match its checksum"
    assert cached_or_build(tmp_path, "key", build) == (folder, False) and len(builds) == 2
    assert "failed verification" in caplog.text and verify_shards(folder) is None

    (folder / "shard-000000.tar").write_bytes(b"")  # emptied
    assert "shard-000000.tar has 0 bytes, 1000 were written" in verify_shards(folder)

    def source_gone(tmp: Path) -> ShardIndex:
        raise FileNotFoundError(2, "No such file or directory", "/data/clips")

    with pytest.raises(CacheCorrupt, match=r"shard-000000.tar has 0 bytes.*could not be rebuilt"):
        cached_or_build(tmp_path, "key", source_gone)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".key.lock", "key"]  # no temporary left behind


def test_stale_temporaries_of_dead_builds_are_removed(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    host = os.uname().nodename
    stale = [tmp_path / f".key.tmp-{host}-{dead.stdout.strip()}", tmp_path / f".other.tmp-{host}-{dead.stdout.strip()}"]
    for path in stale:
        path.mkdir()
        (path / "part").write_text("half")
    alive = tmp_path / f".busy.tmp-{host}-{os.getpid()}"  # a live build of another entry: kept
    alive.mkdir()
    build_once(tmp_path / "key", lambda tmp: tmp.mkdir(), lambda p: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".key.lock", "key", alive.name])


def test_concurrent_builds_wait_and_reuse(tmp_path: Path) -> None:
    """Two processes build the same sample-dataset entry at once: one builds, the other waits and reuses."""
    script = ("import sys; from pathlib import Path; from ltxlab.data.sample import sample_dataset\n"
              "root, identity = sample_dataset('a2v', Path(sys.argv[1]))\n"
              "print(identity['content'])\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert outs[0][0] == outs[1][0]
    name = f"sample-data-v{GENERATOR_VERSION}-a2v"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".{name}.lock", name]


# ---------------------------------------------------------------------------------------------------- OS errors


def _ltxlab_in(mounts: list[tuple[Path, str]], tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m ltxlab`` with each (folder, tmpfs options) mounted over: as root in a private mount namespace,
    else (read-only only) by taking the write permission away."""
    command = [sys.executable, "-m", "ltxlab", "logger=none", "logger.progress_bar=false",
               *random_weights_unless_chosen(args)]
    env = dict(os.environ, PYTHONPATH=str(REPO), WANDB_MODE="offline")
    env.pop("HYDRA_FULL_ERROR", None)
    for folder, _ in mounts:
        folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"]).returncode != 0:
            pytest.skip("no private mount namespace here")
        mount = " && ".join(f"mount -t tmpfs -o {options} tmpfs {folder}" for folder, options in mounts)
        command = ["unshare", "-m", "sh", "-c", f'{mount} && exec "$@"', "sh", *command]
    else:
        if any("ro" not in options.split(",") for _, options in mounts):
            pytest.skip("a full file system needs a tmpfs (root)")
        for folder, _ in mounts:
            folder.chmod(0o555)
    try:
        return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    finally:
        for folder, _ in mounts:
            folder.chmod(0o755)


def _error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def test_read_only_run_dir_is_one_line_and_its_own_exit_code(tmp_path: Path) -> None:
    parent = tmp_path / "ro"
    proc = _ltxlab_in([(parent, "ro")], tmp_path, f"hydra.run.dir={parent / 'run'}",
                      f"data.cache_dir={tmp_path / 'cache'}")
    assert proc.returncode == EXIT_OS != EXIT_INPUT, proc.stderr[-2000:]
    (line,) = _error_lines(proc)
    assert str(parent / "run") in line and ("Read-only file system" in line or "Permission denied" in line)
    assert "Traceback" not in proc.stderr


def test_read_only_or_full_cache_dir_is_one_line_with_error_json(tmp_path: Path) -> None:
    cases = {"ro": ("ro", ("Read-only file system", "Permission denied")),
             "full": ("size=64k", ("No space left on device",))}
    for name, (options, reasons) in cases.items():
        run_dir, cache = tmp_path / name / "run", tmp_path / name / "cache"
        started = time.time()
        proc = _ltxlab_in([(cache, options)], tmp_path, f"hydra.run.dir={run_dir}", f"data.cache_dir={cache}")
        assert proc.returncode == EXIT_OS, proc.stderr[-2000:]
        (line,) = _error_lines(proc)
        assert str(cache) in line and any(r in line for r in reasons), line
        assert "Traceback" not in proc.stderr and time.time() - started < 120
        error = json.loads((run_dir / "error.json").read_text())
        assert error["status"] == 500 and error["detail"] == line.removeprefix("error: ")


def test_a_non_finite_or_misshapen_sample_is_refused_on_first_read(tmp_path: Path) -> None:
    """Checksums cannot catch a sample encoded wrong: its tensors are checked when first read."""
    import torch

    from ltxlab.data.shards import EncodedSample, ShardWriter
    from ltxlab.train.shard_reader import ShardReader

    def tensors(video: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"video": video, "text_video": torch.zeros(4, 8), "text_audio": torch.zeros(4, 4),
                "text_mask": torch.ones(4)}

    writer = ShardWriter(tmp_path, samples_per_shard=8)
    poisoned = torch.zeros(8, 1, 2, 2)
    poisoned[0, 0, 1, 1] = float("nan")
    for i, video in enumerate([torch.zeros(8, 1, 2, 2), poisoned, torch.zeros(8, 1, 2, 3)]):
        writer.write(EncodedSample(key=f"00000{i}_clip", tensors=tensors(video), meta={}))
    shards = writer.close()
    index = ShardIndex(fingerprint="k", shards=[n for n, _ in shards], counts=[c for _, c in shards],
                       with_audio=False, is_image=False, video_latent_shape=[8, 1, 2, 2], audio_latent_shape=None,
                       fps=24.0)
    reader = ShardReader(tmp_path, index)
    assert reader.read(0).key == "000000_clip"
    with pytest.raises(CacheCorrupt, match=r"shard-000000.tar sample 000001_clip: 'video' holds non-finite values"):
        reader.read(1)
    with pytest.raises(CacheCorrupt, match=r"sample 000002_clip: 'video' has shape \[8, 1, 2, 3\], the index says"):
        reader.read(2)
