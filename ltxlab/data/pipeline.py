"""Dataset source → latent shards, cached by fingerprint: the data half of the recipe.

Every dataset rule is checked (ingest + plan) before any encoder is loaded, so bad input fails fast with a
one-line error and nothing is trained. Encoding runs only on a cache miss.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ltxlab import distributed
from ltxlab.config.resolution import bucket_size
from ltxlab.config.schema import Config
from ltxlab.data.cache import build_once, cached_or_build, fingerprint, link_into, source_identity
from ltxlab.data.debug import DebugArchiveWriter, write_debug_archive
from ltxlab.data.encode import Encoder, encode_to_shards
from ltxlab.data.ingest import ingest
from ltxlab.data.prepare import iter_prepared, plan
from ltxlab.data.prepared import PreparedClip, PreparePlan, PrepareSettings, final_caption
from ltxlab.data.sample import sample_dataset
from ltxlab.data.shards import ShardIndex, ShardWriter
from ltxlab.data.sources import resolve_source
from ltxlab.errors import DatasetError
from ltxlab.models.loader import load_text_stack
from ltxlab.sample.preview import encode_preview_prompts, save_preview_prompts

log = logging.getLogger(__name__)

DEBUG_ARCHIVE = "debug_dataset.zip"


@dataclass
class LatentCache:
    directory: Path  # the run's shards folder (linked from the shared cache)
    index: ShardIndex
    key: str  # cache fingerprint
    reused: bool
    debug_archive: str | None = None
    preview_prompts: Path | None = None  # encoded validation prompts (None without validation samples)


def prepare_settings(cfg: Config) -> PrepareSettings:
    width, height = bucket_size(cfg.resolution.name, cfg.resolution.aspect_ratio)
    return PrepareSettings(
        mode=cfg.mode.name, width=width, height=height, number_of_frames=cfg.data.number_of_frames,
        frame_rate=cfg.data.frame_rate, auto_scale_input=cfg.data.auto_scale_input,
        split_input_into_scenes=cfg.data.split_input_into_scenes,
        split_input_duration_threshold=cfg.data.split_input_duration_threshold,
        with_audio=cfg.audio.with_audio, audio_normalize=cfg.audio.normalize,
        audio_preserve_pitch=cfg.audio.preserve_pitch, trigger_phrase=cfg.data.trigger_phrase,
        num_workers=cfg.data.num_workers,
    )


def encoder_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def build_latents_once(cfg: Config, run_dir: Path, launch_dir: Path, show_progress: bool = True) -> LatentCache:
    """The data stage once per run, however many ranks: rank 0 ingests, prepares and encodes (a bad dataset fails
    there, and then on every rank, as the same error) while the others wait; every rank gets rank 0's result."""
    return distributed.run_on_main(lambda: build_latents(cfg, run_dir, launch_dir, show_progress=show_progress))


def build_latents(cfg: Config, run_dir: Path, launch_dir: Path, show_progress: bool = True) -> LatentCache:
    cache_root = (launch_dir / cfg.data.cache_dir).resolve()
    if cfg.data.source == "sample":
        root, identity = sample_dataset(cfg.mode.name, cache_root)
    else:
        root = resolve_source(cfg.data.source, run_dir / "work")
        downloaded = run_dir / "work" / "download" / "dataset.zip"
        identity = source_identity(str(downloaded if downloaded.exists() else cfg.data.source))
    dataset = ingest(root, cfg.mode.name, cfg.data.trigger_phrase)
    settings = prepare_settings(cfg)
    prepared_plan = plan(dataset, settings)
    for warning in prepared_plan.warnings:
        log.warning(warning)
    for name, reason in prepared_plan.skipped:
        log.warning("skipped %s: %s", name, reason)
    log.info("dataset: %d %s item(s), audio %s", len(prepared_plan.items), dataset.kind,
             "on" if prepared_plan.with_audio else "off")

    key = fingerprint({"source": identity, "prepare": asdict(settings) | {"num_workers": None},
                       "with_audio": prepared_plan.with_audio, "model": encoding_identity(cfg)})
    debug = cfg.data.debug_dataset

    encoders: dict[str, Encoder] = {}  # built on a cache miss; its text stack then also encodes the prompts

    def build(tmp: Path) -> ShardIndex:
        captions = [final_caption(item.clip.caption, prepared_plan.settings.trigger_phrase)
                    for item in prepared_plan.items]
        encoders["encoder"] = Encoder(cfg.model, prepared_plan.with_audio, encoder_device(), captions=captions)
        return encode_plan(cfg, encoders["encoder"], prepared_plan, tmp, key, debug, show_progress)

    cache_dir, reused = cached_or_build(cache_root, key, build)
    prompts = preview_prompts(cfg, cache_root, encoders.get("encoder"))
    shards_dir = run_dir / "shards"
    link_into(cache_dir, shards_dir)
    debug_out = None
    if debug:
        cached_archive = cache_dir / DEBUG_ARCHIVE
        if not cached_archive.exists():  # cache built without the archive: prepare again, no encoding
            write_debug_archive(prepared_plan, iter_prepared(prepared_plan), cached_archive)
        debug_out = run_dir / DEBUG_ARCHIVE
        link_into(cache_dir, run_dir, names=[DEBUG_ARCHIVE])
    return LatentCache(directory=shards_dir, index=ShardIndex.load(shards_dir), key=key, reused=reused,
                       debug_archive=str(debug_out) if debug_out else None, preview_prompts=prompts)


# How the transformer is held in training changes no latent or prompt embedding: not part of the cache keys.
TRAINING_ONLY_MODEL_KEYS = ("gradient_checkpointing", "base_precision", "offload", "compile", "attention_backend",
                           "cross_modulation")


def encoding_identity(cfg: Config) -> dict:
    return asdict(cfg.model) | dict.fromkeys(TRAINING_ONLY_MODEL_KEYS)


def preview_prompts(cfg: Config, cache_root: Path, encoder: Encoder | None) -> Path | None:
    """Validation prompt embeddings, encoded now so training never loads the text encoder; cached by the model
    and the prompt texts."""
    if not cfg.validation.samples:
        return None
    texts = [s.prompt for s in cfg.validation.samples] + [cfg.validation.negative_prompt]
    path = cache_root / f"prompts-{fingerprint({'model': encoding_identity(cfg), 'prompts': texts})}.safetensors"

    def encode(tmp: Path) -> None:
        text_stack = encoder.text if encoder is not None else load_text_stack(cfg.model).to(encoder_device())
        save_preview_prompts(encode_preview_prompts(text_stack, cfg.validation), tmp)

    build_once(path, encode, lambda _: None)
    return path


def encode_plan(cfg: Config, encoder: Encoder, prepared_plan: PreparePlan, out_dir: Path, key: str, debug: bool,
                show_progress: bool) -> ShardIndex:
    writer = ShardWriter(out_dir, cfg.data.samples_per_shard)
    clips = iter_prepared(prepared_plan)
    if debug:
        clips = _with_debug_archive(prepared_plan, clips, out_dir / DEBUG_ARCHIVE)
    summary = encode_to_shards(clips, encoder, writer, total=len(prepared_plan.items), show_progress=show_progress)
    shards = writer.close()
    if summary.count == 0:
        raise DatasetError("No usable training clips were left after preprocessing")
    index = ShardIndex(fingerprint=key, shards=[name for name, _ in shards], counts=[n for _, n in shards],
                       with_audio=prepared_plan.with_audio, is_image=prepared_plan.is_image,
                       video_latent_shape=summary.video_latent_shape,
                       audio_latent_shape=summary.audio_latent_shape, fps=float(cfg.data.frame_rate))
    index.save(out_dir)
    return index


def _with_debug_archive(prepared_plan: PreparePlan, clips: Iterator[PreparedClip],
                        archive: Path) -> Iterator[PreparedClip]:
    """Pass clips through while streaming each into the debug archive (no second decode)."""
    with DebugArchiveWriter(prepared_plan, archive) as writer:
        for clip in clips:
            writer.add(clip)
            yield clip
