"""Pretrained tiny LTX-2.3 weights: a folder of one safetensors file per component plus ``manifest.json``.

``tools/pretrain_tiny.py --out DIR`` writes one; ``model.tiny_weights=DIR`` loads it, and ``builtin`` (what
``model=tiny`` selects) is the folder shipped inside the package, ``ltxlab/assets/tiny``. The manifest holds each
component's diffusers config (pretraining uses other sizes than the random tiny family) and the seed. Tokenizer and
Gemma are not pretrained: they are rebuilt from that seed, as pretraining used them; the connectors (seed-built,
frozen) ship with the folder since their widths follow the pretrained transformer's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from ltxlab.errors import ConfigError
from ltxlab.models import tiny

COMPONENTS = ("video_vae", "audio_vae", "vocoder", "connectors", "transformer")
BUILTIN = "builtin"
BUILTIN_DIR = Path(__file__).resolve().parents[1] / "assets" / "tiny"


def resolve(tiny_weights: str) -> Path:
    """The folder ``model.tiny_weights`` names: ``builtin`` is the package's own, anything else a path."""
    return BUILTIN_DIR if tiny_weights == BUILTIN else Path(tiny_weights)


@dataclass(frozen=True)
class PretrainedTiny:
    directory: Path
    seed: int

    @classmethod
    def open(cls, directory: str | Path) -> PretrainedTiny:
        folder = resolve(str(directory))
        manifest = folder / "manifest.json"
        missing = [c for c in COMPONENTS if not (folder / f"{c}.safetensors").is_file()]
        if not manifest.is_file() or missing:
            what = "manifest.json" if not manifest.is_file() else ", ".join(f"{c}.safetensors" for c in missing)
            raise ConfigError(f"model.tiny_weights: {folder} lacks {what}; write it with "
                              "tools/pretrain_tiny.py --out, or use model=tiny_random (random weights)")
        return cls(folder, int(json.loads(manifest.read_text())["plan"]["seed"]))

    def manifest(self) -> dict:
        return json.loads((self.directory / "manifest.json").read_text())

    def build(self, component: str) -> torch.nn.Module:
        """The component in the manifest's config with the pretrained weights (every key must match)."""
        module = tiny.build_from_config(component, self.manifest()["configs"][component], self.seed)
        module.load_state_dict(load_file(self.directory / f"{component}.safetensors"), strict=True)
        return module
