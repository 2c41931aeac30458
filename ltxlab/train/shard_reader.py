"""Random access to the samples of WebDataset tar shards.

A rank reads only its own share of each batch, so streaming every shard (and dropping the other ranks' samples)
would cost N× the I/O and decoding. One scan of a shard's tar headers gives each member's byte range; a sample
is then two positioned reads, safe from several loader threads at once.
"""

from __future__ import annotations

import json
import os
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path

import safetensors
import torch
from safetensors.torch import load as load_safetensors

from ltxlab.data.shards import EncodedSample, ShardIndex
from ltxlab.errors import CacheCorrupt

LATENTS = "latents.safetensors"
META = "json"


@dataclass(frozen=True)
class SampleLocation:
    shard: int  # position in index.shards
    key: str
    members: dict[str, tuple[int, int]]  # extension -> (data offset, size)


def scan_shard(path: Path, shard: int) -> list[SampleLocation]:
    """The samples of one shard in stored order (WebDataset groups consecutive members by key)."""
    samples: list[SampleLocation] = []
    with tarfile.open(path) as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, extension = member.name.partition(".")
            if not samples or samples[-1].key != key:
                samples.append(SampleLocation(shard, key, {}))
            samples[-1].members[extension] = (member.offset_data, member.size)
    return samples


def sample_problem(tensors: dict[str, torch.Tensor], shapes: dict[str, list[int] | None]) -> str | None:
    """What is wrong with one decoded sample (missing tensor, shape, dtype, non-finite values), or None."""
    for name in ("video", "text_video", "text_audio", "text_mask", *(["audio"] if shapes.get("audio") else [])):
        tensor = tensors.get(name)
        if tensor is None:
            return f"no '{name}' tensor"
        if not tensor.is_floating_point():
            return f"'{name}' has dtype {tensor.dtype}, not a float"
        expected = shapes.get(name)
        if expected is not None and list(tensor.shape) != list(expected):
            return f"'{name}' has shape {list(tensor.shape)}, the index says {list(expected)}"
        if not bool(torch.isfinite(tensor).all()):
            return f"'{name}' holds non-finite values"
    return None


class ShardReader:
    """Every sample of a cache, addressable by its position in shard order."""

    def __init__(self, directory: Path, index: ShardIndex) -> None:
        self.paths = [directory / name for name in index.shards]
        self.locations = [loc for shard, path in enumerate(self.paths) for loc in scan_shard(path, shard)]
        self.shard_starts = [0]
        for count in index.counts:
            self.shard_starts.append(self.shard_starts[-1] + count)
        if self.shard_starts[-1] != len(self.locations):
            raise ValueError(f"{directory}: index.json lists {self.shard_starts[-1]} samples, the shards hold "
                             f"{len(self.locations)}")
        self.expected_shapes = {"video": index.video_latent_shape, "audio": index.audio_latent_shape}
        self._fds: dict[int, int] = {}
        self._open_lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.locations)

    def _read(self, shard: int, offset: int, size: int) -> bytes:
        fd = self._fds.get(shard)
        if fd is None:
            with self._open_lock:  # loader threads: one descriptor per shard
                if shard not in self._fds:
                    self._fds[shard] = os.open(self.paths[shard], os.O_RDONLY)
                fd = self._fds[shard]
        data = os.pread(fd, size, offset)
        if len(data) != size:
            raise OSError(f"{self.paths[shard]}: short read at {offset} ({len(data)} of {size} bytes)")
        return data

    def read(self, position: int) -> EncodedSample:
        loc = self.locations[position]
        try:
            tensors = load_safetensors(self._read(loc.shard, *loc.members[LATENTS]))
            meta = json.loads(self._read(loc.shard, *loc.members[META])) if META in loc.members else {}
        except (KeyError, ValueError, OSError, safetensors.SafetensorError) as err:
            raise CacheCorrupt(f"{self.paths[loc.shard]} sample {loc.key} is unreadable ({err}); delete the cache "
                               "entry or run again to rebuild it") from err
        problem = sample_problem(tensors, self.expected_shapes)
        if problem is not None:
            raise CacheCorrupt(f"{self.paths[loc.shard]} sample {loc.key}: {problem}; the encoder produced it, "
                               "so check the dataset clip and the encoder weights")
        return EncodedSample(key=loc.key, tensors=tensors, meta=meta)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
