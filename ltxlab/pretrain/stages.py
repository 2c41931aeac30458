"""Run the pretraining stages in order, each resumable from its last checkpoint, and export the weights.

Stages: the video VAE (parts ``video_decoder``, ``video_encoder``, ``video_vae``), ``audio`` (audio VAE +
vocoder), the latent corpus (``corpus.pt``) and the ``transformer``. Work directory layout (``--work``):
``<part>/state.pt`` (modules, optimizer, scheduler, step; written atomically
every ``checkpoint_every`` steps) and ``<stage>/done.pt`` once the stage finished, so a re-run skips it; a codec
stage's held-out measurements and the buffers they set (latent statistics, the vocoder's level) are kept in
``<stage>/finished.pt``, so a re-run does not measure again. The
exported weights (``--out``): one safetensors file per component plus ``manifest.json`` (plan, seed, per-stage
steps and final losses, measured codec quality, wall time), loaded with ``model.tiny_weights=DIR``.
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
from ltxlab.models.spec import ModelConfig
from ltxlab.models.text import TextStack
from ltxlab.pretrain import codec_stages as codec
from ltxlab.pretrain.flow_stage import FlowObjective, LatentCorpus, corpus_specs, encode_corpus

log = logging.getLogger(__name__)

COMPONENTS = ("video_vae", "audio_vae", "vocoder", "connectors", "transformer")
VIDEO_LATENT_CHANNELS = codec.DESIGNED_CHANNELS
TEACHER_FRACTION = 0.4  # the audio decoder's first steps read the designed latent, then the encoder's
VIDEO_HEAD_DIM = 64  # video width 128 > the 96 latent channels (a narrower model cannot denoise every channel)
AUDIO_HEAD_DIM = 16


def component_configs() -> dict[str, dict]:
    """The pretrained family's sizes: the random tiny family's configs with a wider video VAE whose 96 latent
    channels are the designed thumbnails (``codec.designed_latent``), and a transformer (4 blocks, video width 128,
    audio 32) wide enough to denoise them; the connectors follow the transformer's widths."""
    video_width, audio_width = tiny.HEADS * VIDEO_HEAD_DIM, tiny.HEADS * AUDIO_HEAD_DIM
    return {
        "video_vae": tiny.video_vae_config() | {
            "latent_channels": VIDEO_LATENT_CHANNELS,
            "block_out_channels": (16, 32, 64, 64), "decoder_block_out_channels": (16, 32, 32, 64)},
        "audio_vae": tiny.audio_vae_config(),
        "vocoder": tiny.vocoder_config(),
        "connectors": tiny.connectors_config() | {
            "video_connector_attention_head_dim": VIDEO_HEAD_DIM, "audio_connector_attention_head_dim": AUDIO_HEAD_DIM,
            "video_hidden_dim": video_width, "audio_hidden_dim": audio_width},
        "transformer": tiny.transformer_config() | {
            "in_channels": VIDEO_LATENT_CHANNELS, "out_channels": VIDEO_LATENT_CHANNELS, "num_layers": 4,
            "attention_head_dim": VIDEO_HEAD_DIM, "cross_attention_dim": video_width,
            "audio_attention_head_dim": AUDIO_HEAD_DIM, "audio_cross_attention_dim": audio_width},
    }


@dataclass(frozen=True)
class StagePlan:
    steps: int
    batch: int
    learning_rate: float


@dataclass(frozen=True)
class PretrainPlan:
    seed: int = 0
    video_decoder: StagePlan = StagePlan(steps=4000, batch=2, learning_rate=1e-3)
    decoder_still_steps: int = 300  # the decoder's first steps paint stills (twice its batch): cheaper, learns faster
    video_encoder: StagePlan = StagePlan(steps=400, batch=2, learning_rate=1e-3)
    video_vae: StagePlan = StagePlan(steps=300, batch=2, learning_rate=3e-4)
    audio: StagePlan = StagePlan(steps=800, batch=4, learning_rate=2e-3)
    transformer: StagePlan = StagePlan(steps=2000, batch=4, learning_rate=1e-3)
    corpus_clips: int = 160
    eval_clips: int = 4  # held-out clips for the measured codec quality in the manifest
    stats_clips: int = 16  # clips for the video latents' per-channel mean/std
    checkpoint_every: int = 200

    @classmethod
    def smoke(cls) -> PretrainPlan:
        """A few steps per stage: proves every stage, resume and export run (CI), not that anything is learnt."""
        return cls(video_decoder=StagePlan(3, 1, 2e-3), decoder_still_steps=1, video_encoder=StagePlan(2, 1, 2e-3),
                   video_vae=StagePlan(2, 1, 2e-3), audio=StagePlan(3, 2, 2e-3), transformer=StagePlan(3, 2, 1e-3),
                   corpus_clips=2, eval_clips=1, stats_clips=2, checkpoint_every=2)


def _cosine(plan: StagePlan) -> Callable[[int], float]:
    warmup = max(1, min(100, plan.steps // 10))

    def factor(step: int) -> float:
        return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step, plan.steps) / plan.steps))

    return factor


def _atomic_save(obj: object, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


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
    optimizer = torch.optim.AdamW(params, lr=plan.learning_rate, weight_decay=0.0)
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


def finish_once(name: str, modules: dict[str, nn.Module], finish: Callable[[], dict], work: Path) -> dict:
    """Run a trained stage's ``finish`` (held-out measurements, latent statistics, calibration: they set buffers
    and weights) once; its result and the modules' finished state are kept in ``work/name/finished.pt``, which a
    re-run loads instead of measuring again."""
    path = work / name / "finished.pt"
    if path.exists():
        state = torch.load(path, weights_only=True)
        for key, module in modules.items():
            module.load_state_dict(state["modules"][key])
        return state["summary"]
    summary = finish()
    _atomic_save({"modules": {k: m.state_dict() for k, m in modules.items()}, "summary": summary}, path)
    return summary


def train_video_vae(plan: PretrainPlan, work: Path, progress: bool = True) -> tuple[nn.Module, dict]:
    """Stage 1, in three parts on the designed latent (``codec.designed_latent``): the decoder alone paints frames
    from it (stills first, then clips: the cheap part, no 96-wide encoder stage), the encoder alone regresses it,
    then both end to end. Returns the VAE with its held-out PSNR and latent statistics."""
    seed = plan.seed
    vae = tiny.build_from_config("video_vae", component_configs()["video_vae"], seed)

    def pixels_at(part: int, step: int, batch: int, stills: bool = False) -> Tensor:
        rng = codec.step_rng(seed, part, step)
        return codec.video_batch(rng, 2 * batch, frames_per_clip=1) if stills else codec.video_batch(rng, batch)

    def decoder_loss(step: int) -> Tensor:
        pixels = pixels_at(1, step, plan.video_decoder.batch, stills=step < plan.decoder_still_steps)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # ~7x faster 3D convolutions on AVX-512 BF16 CPUs
            return codec.video_decoder_loss(vae, pixels, torch.Generator().manual_seed(step))

    def encoder_loss(step: int) -> Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return codec.video_encoder_loss(vae, pixels_at(5, step, plan.video_encoder.batch))

    def joint_loss(step: int) -> Tensor:
        pixels = pixels_at(6, step, plan.video_vae.batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return codec.video_vae_loss(vae, pixels, torch.Generator().manual_seed(step))

    parts = {"video_decoder": ({"decoder": vae.decoder}, decoder_loss, plan.video_decoder),
             "video_encoder": ({"encoder": vae.encoder}, encoder_loss, plan.video_encoder),
             "video_vae": ({"video_vae": vae}, joint_loss, plan.video_vae)}
    done = {name: train_stage(name, modules, loss_at, part_plan, work, plan.checkpoint_every, progress)
            for name, (modules, loss_at, part_plan) in parts.items()}

    def finish() -> dict:
        summary = {"final_loss": done["video_vae"]["final_loss"], "parts": done}
        summary["heldout_psnr_db"] = codec.heldout_video_psnr(vae, seed, plan.eval_clips)
        codec.set_video_latent_stats(vae, seed, plan.stats_clips)
        return summary

    summary = finish_once("video_vae", {"video_vae": vae}, finish, work)
    log.info("video VAE: held-out PSNR %.2f dB", summary["heldout_psnr_db"])
    return vae, summary


def train_audio(plan: PretrainPlan, work: Path, progress: bool = True) -> tuple[nn.Module, nn.Module, dict]:
    """Stage 2: the audio VAE (mel reconstruction) and the vocoder (multi-resolution STFT), side by side."""
    seed, configs = plan.seed, component_configs()
    audio_vae = tiny.build_from_config("audio_vae", configs["audio_vae"], seed)
    vocoder = tiny.build_from_config("vocoder", configs["vocoder"], seed)
    codec.init_vocoder_stft(vocoder)

    def loss_at(step: int) -> Tensor:
        low, high = codec.audio_batch(codec.step_rng(seed, 2, step), plan.audio.batch)
        teacher = step < plan.audio.steps * TEACHER_FRACTION
        return codec.audio_vae_loss(audio_vae, low, torch.Generator().manual_seed(step), teacher) + \
            codec.vocoder_loss(vocoder, low, high)

    modules = {"audio_vae": audio_vae, "vocoder": vocoder}
    trained = train_stage("audio", modules, loss_at, plan.audio, work, plan.checkpoint_every, progress)

    def finish() -> dict:
        summary = dict(trained)
        summary["vocoder_gain"] = round(codec.calibrate_vocoder_level(vocoder, seed), 2)
        summary["heldout_envelope_correlation"] = codec.heldout_envelope_correlation(audio_vae, vocoder, seed,
                                                                                        plan.eval_clips)
        codec.set_audio_latent_stats(audio_vae, seed)
        return summary

    summary = finish_once("audio", modules, finish, work)
    log.info("audio: held-out envelope correlation %.3f", summary["heldout_envelope_correlation"])
    return audio_vae, vocoder, summary


def train_transformer(plan: PretrainPlan, work: Path, vae: nn.Module, audio_vae: nn.Module,
                      progress: bool = True) -> tuple[nn.Module, nn.Module, dict]:
    """Stage 3: encode the latent corpus once (cached in ``work``), then the flow model on it."""
    seed, configs = plan.seed, component_configs()
    connectors = tiny.build_from_config("connectors", configs["connectors"], seed).eval().requires_grad_(False)
    corpus_path = work / "corpus.pt"
    if corpus_path.exists():
        corpus = LatentCorpus.from_state_dict(torch.load(corpus_path, weights_only=True))
    else:
        text = TextStack(tiny.build_tokenizer(), tiny.build_text_encoder(seed).eval(), connectors,
                         max_sequence_length=ModelConfig.max_sequence_length)
        bar = tqdm(total=plan.corpus_clips, desc="encode corpus", unit="clip", disable=not progress)
        corpus = encode_corpus(corpus_specs(seed, plan.corpus_clips), vae, audio_vae, text, bar)
        bar.close()
        _atomic_save(corpus.state_dict(), corpus_path)
    transformer = tiny.build_from_config("transformer", configs["transformer"], seed)
    objective = FlowObjective(corpus, transformer.config.audio_in_channels, seed, plan.transformer.batch)
    def loss_at(step: int) -> Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return objective.loss(transformer, step)

    summary = train_stage("transformer", {"transformer": transformer}, loss_at, plan.transformer, work,
                          plan.checkpoint_every, progress)
    return connectors, transformer, summary


STAGES = ("video_vae", "audio", "transformer")


def pretrain(plan: PretrainPlan, work: Path, out: Path | None, stages: tuple[str, ...] = STAGES,
             progress: bool = True) -> dict:
    """The named stages (each resumes or skips when done), then, if every stage ran and ``out`` is given, the
    export; returns the stages' summaries (and, after an export, the whole manifest)."""
    torch.manual_seed(plan.seed)
    started = time.perf_counter()
    summaries: dict[str, dict] = {}
    modules: dict[str, nn.Module] = {}
    if "video_vae" in stages or "transformer" in stages:
        modules["video_vae"], summaries["video_vae"] = train_video_vae(plan, work, progress)
    if "audio" in stages or "transformer" in stages:
        modules["audio_vae"], modules["vocoder"], summaries["audio"] = train_audio(plan, work, progress)
    if "transformer" in stages:
        modules["connectors"], modules["transformer"], summaries["transformer"] = train_transformer(
            plan, work, modules["video_vae"], modules["audio_vae"], progress)
    if out is None or set(modules) != set(COMPONENTS):
        return {"stages": summaries}
    manifest = {"plan": dataclasses.asdict(plan), "parameters_dtype": "float16",
                "configs": json.loads(json.dumps(component_configs())),
                "stages": summaries, "seconds_this_run": round(time.perf_counter() - started, 1)}
    export(modules, out, manifest)
    return manifest


def export(modules: dict[str, nn.Module], out: Path, manifest: dict) -> None:
    """One safetensors file per component: parameters in float16 (half the size: the package ships them, within
    the 20 MB budget; loading casts back to the model's dtype), buffers such as latent statistics in float32."""
    out.mkdir(parents=True, exist_ok=True)
    for name, module in modules.items():
        params = {key for key, _ in module.named_parameters()}
        tensors = {k: (v.half() if k in params else v).detach().contiguous() for k, v in module.state_dict().items()}
        save_file(tensors, out / f"{name}.safetensors", metadata={"ltxlab_component": name})
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
