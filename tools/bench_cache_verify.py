"""What the latent cache's verification pass costs, relative to the encode that built the cache.

    .venv/bin/python tools/bench_cache_verify.py [hydra overrides, e.g. resolution=medium data.number_of_frames=33]

Builds a fresh cache of the sample dataset (tiny model) into a temporary folder, timing the build (prepare +
encode, the sample dataset generated beforehand and not counted), then times ``verify_shards`` (size + CRC-32 of
every shard, what every run does before reusing a cache) with a warm page cache, best of 5. The tiny model's
shards are small, so it also times the checksum on a 256 MB file and prints what that rate means for one LTX-2.3
sample at 768×768×89 (video latents 128×12×24×24 and 1024-token text embeddings 4096 + 2048 wide, bf16: 14.4 MB).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from ltxlab.config import CONF_DIR
from ltxlab.config.schema import register_configs
from ltxlab.config.validate import validate
from ltxlab.data.cache import shard_checksum, verify_shards
from ltxlab.data.pipeline import build_latents
from ltxlab.data.sample import sample_dataset

LTX23_SAMPLE_BYTES = 2 * (128 * 12 * 24 * 24 + 1024 * (4096 + 2048))


def main(overrides: list[str]) -> None:
    register_configs()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = validate(compose(config_name="config", overrides=[
                "validation=none", "logger=none", f"data.cache_dir={root / 'cache'}", *overrides]))
        sample_dataset(cfg.mode.name, root / "cache")  # not part of the encode being compared
        started = time.perf_counter()
        latents = build_latents(cfg, root / "run", root, show_progress=False)
        build = time.perf_counter() - started
        entry = root / "cache" / latents.key
        size = sum(p.stat().st_size for p in entry.glob("*.tar"))
        timings = []
        for _ in range(5):
            started = time.perf_counter()
            assert verify_shards(entry) is None
            timings.append(time.perf_counter() - started)
        verify = min(timings)
        print(f"{latents.index.num_samples} samples, {size / 1e6:.1f} MB of shards: build (prepare + encode) "
              f"{build:.2f} s, verification {verify * 1e3:.1f} ms ({verify / build:.2%} of the build; "
              f"{size / verify / 1e6:.0f} MB/s)")
        big = root / "big.tar"
        big.write_bytes(os.urandom(256 << 20))
        started = time.perf_counter()
        shard_checksum(big)
        rate = (256 << 20) / (time.perf_counter() - started)
        per_sample = LTX23_SAMPLE_BYTES / rate
        print(f"checksum rate on 256 MB: {rate / 1e6:.0f} MB/s → {per_sample * 1e3:.0f} ms per LTX-2.3 sample "
              f"({LTX23_SAMPLE_BYTES / 1e6:.1f} MB); ≤ 5 % of the encode while encoding takes ≥ "
              f"{per_sample / 0.05:.2f} s per sample")


if __name__ == "__main__":
    main(sys.argv[1:])
