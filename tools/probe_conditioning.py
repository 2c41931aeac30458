"""Does a tiny-world transformer use its caption and its audio? The measurement behind issue 13's open behaviours.

    python tools/probe_conditioning.py                       # the shipped weights (model=tiny)
    python tools/probe_conditioning.py --weights DIR --clips 32

Encodes held-out world clips (their own seed) with the weights' codecs and text stack, then compares the video flow
loss with each clip's own caption against the batch's captions rolled by one (text to video, no frame held), and
with each clip's own audio against rolled tracks (a2v, first frame held). A transformer that reads its conditioning
shows a clear gap; it also reports how much the video prediction moves when every block's text cross-attention
output is zeroed, or when each clip gets its neighbour's track, and the audio→video cross-attention's output
norm over its (normalised, modulated) video input's (a base that learnt to ignore audio shuts that branch, and a
LoRA's gradients through it shrink with it). Each is measured at σ = 1, the sampler's first step, where the latent holds
nothing of the clip and the conditioning must carry it, and at σ = 0.97, where self-attention can already pool this
flat-colour world's scene out of the noise (so a gap there is small even for a model that reads its captions).

Motion: for clips moving along each axis (up to ``--clips`` of them) from the centre at speed 0.4, the first frame
held, it reports how far the shape's latent centroid travels along the caption's direction from frame 0 to the
last latent frame, in latent cells: in the transformer's one-step clean prediction and in the clip itself
(``motion_cells_predicted`` / ``motion_cells_drawn``). A base that moves shapes predicts a shift toward the drawn
one already at σ = 1.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import torch
from torch import Tensor, nn

from ltxlab.models import tiny
from ltxlab.models.pretrained import BUILTIN, PretrainedTiny
from ltxlab.models.spec import ModelConfig
from ltxlab.models.text import TextStack
from ltxlab.modes import LatentBatch, build_mode
from ltxlab.pretrain import world
from ltxlab.pretrain.codec_stages import step_rng
from ltxlab.pretrain.flow_stage import LatentCorpus, encode_corpus
from ltxlab.train.step import compute_loss, predict

SIGMAS = (1.0, 0.97)
HELD_OUT_STAGE = 97  # a stage number no pretraining step draws from
MOTION_SPEED = 0.4  # frame sizes per second: 3.4 latent cells over the demo's 17 frames


class FixedSigma:
    def __init__(self, sigma: float) -> None:
        self.sigma = sigma

    def sample(self, batch_size: int, num_tokens: int, generator: torch.Generator) -> Tensor:
        return torch.full((batch_size,), self.sigma)


@contextmanager
def audio_attention_share(transformer: nn.Module) -> Iterator[list[float]]:
    """Collects, per block call, the audio→video cross-attention's output norm over its video input's (the
    normalised, modulated video states it attends from; the block then adds the output times its a2v gate)."""
    shares: list[float] = []

    def record(module: nn.Module, args: tuple, kwargs: dict, output: Tensor) -> None:
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        shares.append(float(output.norm() / hidden.norm()))

    hooks = [block.audio_to_video_attn.register_forward_hook(record, with_kwargs=True)
             for block in transformer.transformer_blocks]
    try:
        yield shares
    finally:
        for hook in hooks:
            hook.remove()


@contextmanager
def text_attention_zeroed(transformer: nn.Module) -> Iterator[None]:
    """Every block's video text cross-attention returns zeros (its residual branch is cut)."""
    originals = [block.attn2.forward for block in transformer.transformer_blocks]
    for block in transformer.transformer_blocks:
        block.attn2.forward = lambda hidden_states, *args, **kwargs: torch.zeros_like(hidden_states)
    try:
        yield
    finally:
        for block, forward in zip(transformer.transformer_blocks, originals, strict=True):
            block.attn2.forward = forward


def foreground_centroids(latents: Tensor, shape: tuple[int, int, int]) -> Tensor:
    """[F, 2] (x, y) latent-cell centroid of the shape in each latent frame of one packed clip [N, C]: cells weigh
    by their squared distance to their row's median (the backgrounds are vertical gradients), the faint ones (under
    30 % of the frame's largest) dropped."""
    frames, height, width = shape
    cells = latents.float().reshape(frames, height, width, -1)
    weight = (cells - cells.median(dim=2, keepdim=True).values).pow(2).mean(dim=-1)
    weight = torch.where(weight > 0.3 * weight.amax(dim=(1, 2), keepdim=True), weight, torch.zeros_like(weight))
    total = weight.sum(dim=(1, 2)).clamp(min=1e-12)
    x = (weight.sum(dim=1) * torch.arange(width)).sum(dim=1) / total
    y = (weight.sum(dim=2) * torch.arange(height)).sum(dim=1) / total
    return torch.stack([x, y], dim=1)


def _travel(latents: Tensor, shape: tuple[int, int, int], motion: str) -> float:
    """Cells the shape's centroid moves along ``motion`` from the first to the last latent frame."""
    centroids = foreground_centroids(latents, shape)
    return float(((centroids[-1] - centroids[0]) * torch.tensor(world.direction(motion))).sum())


def _as_batch(corpus: LatentCorpus) -> LatentBatch:
    """Every clip of an encoded corpus as one batch, captions as written (no dropout)."""
    return LatentBatch(video=corpus.video, video_shape=corpus.video_shape, audio=corpus.audio,
                       text_video=corpus.text_video, text_audio=corpus.text_audio, text_mask=corpus.text_mask,
                       fps=24.0)


def _rolled(batch: LatentBatch, text: bool, audio: bool) -> LatentBatch:
    """The batch with each clip's caption and/or audio taken from its neighbour."""
    roll = torch.roll(torch.arange(batch.video.shape[0]), 1)
    if text:
        batch = replace(batch, text_video=batch.text_video[roll], text_audio=batch.text_audio[roll],
                        text_mask=batch.text_mask[roll])
    return replace(batch, audio=batch.audio[roll]) if audio else batch


@torch.no_grad()
def probe(weights: str, clips: int, seed: int = 0, sigmas: tuple[float, ...] = SIGMAS) -> dict[str, float]:
    """Each measurement at each σ, keyed ``<name>@<σ>``."""
    shipped = PretrainedTiny.open(weights)
    transformer = shipped.build("transformer").eval()
    text = TextStack(tiny.build_tokenizer(), tiny.build_text_encoder(shipped.seed).eval(),
                     shipped.build("connectors").eval(), ModelConfig.max_sequence_length)
    vae, audio_vae = shipped.build("video_vae").eval(), shipped.build("audio_vae").eval()
    specs = [world.random_spec(step_rng(seed, HELD_OUT_STAGE, i)) for i in range(clips)]  # tone = the shape's
    batch = _as_batch(encode_corpus(specs, vae, audio_vae, text))
    width = transformer.config.audio_in_channels
    movers = [replace(world.random_spec(step_rng(seed, HELD_OUT_STAGE + 1, i), (motion,)), start=(0.5, 0.5),
                      speed=MOTION_SPEED, beat_hz=0.0) for i, motion in enumerate(world.AXIS_MOTIONS[:clips])]
    moving = _as_batch(encode_corpus(movers, vae, audio_vae, text))
    drawn = [_travel(moving.video[i], moving.video_shape, spec.motion) for i, spec in enumerate(movers)]
    results = {}
    for sigma in sigmas:
        t2v = build_mode("i2v", 0.0, FixedSigma(sigma), width)
        a2v = build_mode("a2v", 1.0, FixedSigma(sigma), width)

        def video_loss(mode, b: LatentBatch) -> tuple[float, Tensor]:
            """The video flow loss and the video prediction (the same noise for every call: one seed)."""
            inputs = mode.prepare(b, torch.Generator().manual_seed(seed))
            video, audio = predict(transformer, inputs, b)
            return float(compute_loss(video, audio, inputs).video.mean()), video

        t2v_own, video = video_loss(t2v, batch)
        with text_attention_zeroed(transformer):
            _, cut = video_loss(t2v, batch)
        with audio_attention_share(transformer) as shares:
            a2v_own, own_prediction = video_loss(a2v, batch)
        a2v_rolled, rolled_prediction = video_loss(a2v, _rolled(batch, text=False, audio=True))
        i2v = build_mode("i2v", 1.0, FixedSigma(sigma), width)
        held = i2v.prepare(moving, torch.Generator().manual_seed(seed))
        velocity, _ = predict(transformer, held, moving)
        clean = held.video.noisy - held.video.timesteps[..., None] * velocity  # x₀ = x_σ − σ·v per token
        predicted = [_travel(clean[i], moving.video_shape, spec.motion) for i, spec in enumerate(movers)]
        results |= {f"{name}@{sigma:g}": value for name, value in {
            "t2v_loss_own_caption": t2v_own,
            "t2v_loss_rolled_captions": video_loss(t2v, _rolled(batch, text=True, audio=False))[0],
            "a2v_loss_own_audio": a2v_own,
            "a2v_loss_rolled_audio": a2v_rolled,
            "prediction_change_without_text_attention": float((cut - video).norm() / video.norm()),
            "a2v_prediction_change_with_rolled_audio": float(
                (rolled_prediction - own_prediction).norm() / own_prediction.norm()),
            "audio_attention_output_share": sum(shares) / len(shares),
            "motion_cells_predicted": sum(predicted) / len(predicted),
            "motion_cells_drawn": sum(drawn) / len(drawn),
        }.items()}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=BUILTIN, help="tools/pretrain_tiny.py --out folder (default: shipped)")
    parser.add_argument("--clips", type=int, default=16)
    args = parser.parse_args(argv)
    for name, value in probe(args.weights, args.clips).items():
        print(f"{name:50s} {value:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
