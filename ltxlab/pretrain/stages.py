"""Run the three pretraining stages in order, each resumable from its last checkpoint, and export the weights.

Work directory layout (``--work``): ``<stage>/state.pt`` (modules, optimizer, scheduler, step; written atomically
every ``checkpoint_every`` steps) and ``<stage>/done.pt`` once the stage finished, so a re-run skips it. The
exported weights (``--out``): one safetensors file per component plus ``manifest.json`` (plan, seed, per-stage
steps and final losses, wall time), loaded by ``model=tiny``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor, nn
from tqdm import tqdm

from ltxlab.models import tiny
from ltxlab.pretrain import codec_stages as codec
from ltxlab.pretrain.flow_stage import FlowObjective, LatentCorpus, corpus_specs, encode_corpus

log = logging.getLogger(__name__)

COMPONENTS = ("video_vae", "audio_vae", "vocoder", "transformer")
VIDEO_LATENT_CHANNELS = 16


def component_configs() -> dict[str, dict]:
    """The pretrained family's sizes: the random tiny family's configs with a wider video VAE. At the random
    family's widths (8 channels after the 4×4 patchify, 8 latent channels) reconstruction stalled near 15 dB."""
    return {
        "video_vae": tiny.video_vae_config() | {
            "latent_channels": VIDEO_LATENT_CHANNELS,
            "block_out_channels": (16, 32, 64, 64), "decoder_block_out_channels": (16, 32, 32, 64)},
        "audio_vae": tiny.audio_vae_config(),
        "vocoder": tiny.vocoder_config(),
        "transformer": tiny.transformer_config() | {"in_channels": VIDEO_LATENT_CHANNELS,
                                                    "out_channels": VIDEO_LATENT_CHANNELS},
    }


@dataclass(frozen=True)
class StagePlan:
    steps: int
    batch: int
    learning_rate: float


@dataclass(frozen=True)
class PretrainPlan:
    seed: int = 0
    video_vae: StagePlan = StagePlan(steps=3000, batch=4, learning_rate=1e-3)
    audio: StagePlan = StagePlan(steps=800, batch=4, learning_rate=2e-3)
    transformer: StagePlan = StagePlan(steps=3000, batch=4, learning_rate=1e-3)
    corpus_clips: int = 256
    checkpoint_every: int = 200

    @classmethod
    def smoke(cls) -> PretrainPlan:
        """A few steps per stage: proves every stage, resume and export run (CI), not that anything is learnt."""
        return cls(video_vae=StagePlan(3, 1, 2e-3), audio=StagePlan(3, 2, 2e-3), transformer=StagePlan(3, 2, 1e-3),
                   corpus_clips=2, checkpoint_every=2)


def _cosine(plan: StagePlan) -> Callable[[int], float]:
    warmup = max(1, min(100, plan.steps // 10))

    def factor(step: int) -> float:
        return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step, plan.steps) / plan.steps))

    return factor


def _atomic_save(obj: object, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


# The VAEs' entry and exit convolutions read from / write through per-pixel RMS-normalised features, so their
# weights must grow to O(1) while Adam moves each by about the learning rate per step: they get a 10× rate
# (measured on a decoder-only flat-colour fit: the colour was learnt in half the steps).
READOUT_PREFIXES = ("encoder.conv_in", "encoder.conv_out", "decoder.conv_in", "decoder.conv_out")
READOUT_LR_SCALE = 10.0


def _param_groups(modules: dict[str, nn.Module], lr: float) -> list[dict]:
    readout, rest = [], []
    for module in modules.values():
        for name, param in module.named_parameters():
            (readout if name.startswith(READOUT_PREFIXES) else rest).append(param)
    groups = [{"params": rest, "lr": lr}]
    if readout:
        groups.append({"params": readout, "lr": lr * READOUT_LR_SCALE})
    return groups


def train_stage(name: str, modules: dict[str, nn.Module], loss_at: Callable[[int], Tensor], plan: StagePlan,
                work: Path, checkpoint_every: int, progress: bool = True) -> dict[str, float]:
    """Train ``modules`` for ``plan.steps`` (AdamW, warmup + cosine, clip 1.0), resuming from ``work/name``."""
    stage_dir = work / name
    stage_dir.mkdir(parents=True, exist_ok=True)
    done = stage_dir / "done.pt"
    if done.exists():
        state = torch.load(done, weights_only=True)
        for key, module in modules.items():
            module.load_state_dict(state["modules"][key])
        log.info("stage %s: already done (%d steps), loaded", name, plan.steps)
        return state["summary"]
    params = [p for m in modules.values() for p in m.parameters()]
    for module in modules.values():
        module.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(_param_groups(modules, plan.learning_rate), weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine(plan))
    start, losses = 0, []
    state_path = stage_dir / "state.pt"
    if state_path.exists():
        state = torch.load(state_path, weights_only=True)
        for key, module in modules.items():
            module.load_state_dict(state["modules"][key])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, losses = state["step"], state["losses"]
        log.info("stage %s: resumed at step %d", name, start)
    started = time.perf_counter()
    bar = tqdm(total=plan.steps, initial=start, desc=name, unit="step", disable=not progress, dynamic_ncols=True)
    for step in range(start, plan.steps):
        loss = loss_at(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
        if (step + 1) % checkpoint_every == 0 and step + 1 < plan.steps:
            _atomic_save({"modules": {k: m.state_dict() for k, m in modules.items()}, "step": step + 1,
                          "losses": losses, "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict()}, state_path)
    bar.close()
    for module in modules.values():
        module.eval().requires_grad_(False)
    tail = losses[-max(1, len(losses) // 10):]
    summary = {"steps": plan.steps, "final_loss": sum(tail) / len(tail),
               "seconds_this_run": round(time.perf_counter() - started, 1)}
    _atomic_save({"modules": {k: m.state_dict() for k, m in modules.items()}, "summary": summary}, done)
    state_path.unlink(missing_ok=True)
    return summary


def pretrain(plan: PretrainPlan, work: Path, out: Path, progress: bool = True) -> dict:
    """All stages, then the export; returns the manifest."""
    torch.manual_seed(plan.seed)
    started = time.perf_counter()
    seed = plan.seed
    configs = component_configs()
    vae = tiny.build_from_config("video_vae", configs["video_vae"], seed)
    summaries = {"video_vae": train_stage(
        "video_vae", {"video_vae": vae},
        lambda s: codec.video_vae_loss(vae, codec.video_batch(codec.step_rng(seed, 1, s), plan.video_vae.batch),
                                       torch.Generator().manual_seed(s)),
        plan.video_vae, work, plan.checkpoint_every, progress)}
    codec.set_video_latent_stats(vae, seed, clips=4 if plan.corpus_clips < 16 else 16)

    audio_vae = tiny.build_from_config("audio_vae", configs["audio_vae"], seed)
    vocoder = tiny.build_from_config("vocoder", configs["vocoder"], seed)
    codec.init_vocoder_stft(vocoder)

    def audio_loss(step: int) -> Tensor:
        low, high = codec.audio_batch(codec.step_rng(seed, 2, step), plan.audio.batch)
        return codec.audio_vae_loss(audio_vae, low, torch.Generator().manual_seed(step)) + codec.vocoder_loss(
            vocoder, low, high)

    summaries["audio"] = train_stage("audio", {"audio_vae": audio_vae, "vocoder": vocoder}, audio_loss, plan.audio,
                                     work, plan.checkpoint_every, progress)
    codec.set_audio_latent_stats(audio_vae, seed)

    corpus_path = work / "corpus.pt"
    if corpus_path.exists():
        corpus = LatentCorpus.from_state_dict(torch.load(corpus_path, weights_only=True))
    else:
        text = _text_stack(seed)
        bar = tqdm(total=plan.corpus_clips, desc="encode corpus", unit="clip", disable=not progress)
        corpus = encode_corpus(corpus_specs(seed, plan.corpus_clips), vae, audio_vae, text, bar)
        bar.close()
        _atomic_save(corpus.state_dict(), corpus_path)
    transformer = tiny.build_from_config("transformer", configs["transformer"], seed)
    objective = FlowObjective(corpus, transformer.config.audio_in_channels, seed, plan.transformer.batch)
    summaries["transformer"] = train_stage("transformer", {"transformer": transformer},
                                           lambda s: objective.loss(transformer, s), plan.transformer, work,
                                           plan.checkpoint_every, progress)
    modules = {"video_vae": vae, "audio_vae": audio_vae, "vocoder": vocoder, "transformer": transformer}
    manifest = {"plan": dataclasses.asdict(plan), "configs": json.loads(json.dumps(configs)), "stages": summaries,
                "seconds_this_run": round(time.perf_counter() - started, 1)}
    export(modules, out, manifest)
    return manifest


def _text_stack(seed: int):
    from ltxlab.models.loader import load_text_stack
    from ltxlab.models.spec import ModelConfig

    return load_text_stack(ModelConfig(name="tiny", seed=seed))


def export(modules: dict[str, nn.Module], out: Path, manifest: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, module in modules.items():
        tensors = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
        save_file(tensors, out / f"{name}.safetensors", metadata={"ltxlab_component": name})
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
