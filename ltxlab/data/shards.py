"""WebDataset tar shards of encoded samples: the only thing the trainer reads.

One sample = ``<key>.latents.safetensors`` (video/audio latents and text embeddings) + ``<key>.json`` (caption,
fps, source). ``index.json`` beside the shards records the shard list, sample counts, latent shapes and the cache
fingerprint.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import webdataset as wds
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

INDEX_NAME = "index.json"
SHARD_PATTERN = "shard-%06d.tar"


@dataclass
class EncodedSample:
    key: str
    # video [C,F,H,W], audio [L,D] (when on), text_video [S,Dv], text_audio [S,Da], text_mask [S]
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]


@dataclass
class ShardIndex:
    fingerprint: str
    shards: list[str]
    counts: list[int]
    with_audio: bool
    is_image: bool
    video_latent_shape: list[int]  # [C, F, H, W]
    audio_latent_shape: list[int] | None  # [L, D]; None when audio is off or clip durations differ
    fps: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_samples(self) -> int:
        return sum(self.counts)

    def save(self, directory: Path) -> None:
        (directory / INDEX_NAME).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, directory: Path) -> ShardIndex:
        return cls(**json.loads((directory / INDEX_NAME).read_text()))


def sample_key(position: int, name: str) -> str:
    # WebDataset splits key and extension at the first dot, so keys hold no dots.
    return f"{position:06d}_" + re.sub(r"[^A-Za-z0-9_-]", "_", name)[:80]


class ShardWriter:
    """Streams encoded samples into size-bounded tar shards and records their counts."""

    def __init__(self, directory: Path, samples_per_shard: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        # A fixed member mtime: the same samples give byte-identical shards (a rebuilt cache equals the first build).
        self._writer = wds.ShardWriter(str(directory / SHARD_PATTERN), maxcount=samples_per_shard, verbose=0,
                                       mtime=0)
        self.count = 0

    def write(self, sample: EncodedSample) -> None:
        tensors = {k: v.detach().cpu().contiguous() for k, v in sample.tensors.items()}
        self._writer.write({"__key__": sample.key, "latents.safetensors": save_safetensors(tensors),
                            "json": sample.meta})
        self.count += 1

    def close(self) -> list[tuple[str, int]]:
        self._writer.close()
        shards = sorted(p.name for p in self.directory.glob("shard-*.tar"))
        return [(name, sum(1 for _ in read_shard(self.directory / name))) for name in shards]


def read_shard(path: Path) -> Iterator[EncodedSample]:
    """Samples of one shard in stored order."""
    # One whole shard, whatever the process: no node/worker splitting (WebDataset refuses WORLD_SIZE > 1 without).
    dataset = wds.WebDataset(str(path), shardshuffle=False, empty_check=False, nodesplitter=None,
                             workersplitter=None)
    for raw in dataset:
        yield EncodedSample(key=raw["__key__"], tensors=load_safetensors(raw["latents.safetensors"]),
                            meta=json.loads(raw["json"]))
