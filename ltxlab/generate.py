"""Generate one clip with a trained LoRA: ``python -m ltxlab.generate --lora LORA --prompt TEXT --out OUT.mp4``.

i2v: ``--image``; a2v: ``--image`` and ``--audio``; text-to-video: neither (warned about when the LoRA was trained
with the first frame always held). Uses the same sampler as the training previews and writes an mp4 with audio
(a2v: the fitted conditioning audio; otherwise generated audio, or silence with ``--no-audio``). The LoRA may be
either exported format (ComfyUI ``diffusion_model.`` keys or diffusers ``transformer.`` keys). Bad input exits
with status 2 and a one-line message. Sampling flags and their defaults come from
`ltxlab.sample.settings.SamplingSettings`, the same as the validation previews'; ``--model`` defaults to tiny.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import torch
from torch import nn

from ltxlab.config.resolution import ASPECT_RATIOS, RESOLUTIONS
from ltxlab.data.media import MediaError
from ltxlab.errors import InputError, LtxlabError, print_error_line
from ltxlab.export import CONFIG_FILE, DIFFUSERS_FILE
from ltxlab.models import loader
from ltxlab.models.pretrained import BUILTIN
from ltxlab.models.spec import ModelConfig
from ltxlab.models.text import encode_prompts
from ltxlab.sample.runner import ClipRunner, RenderedClip
from ltxlab.sample.settings import SamplingSettings, sampling_problems, unused_with_frozen_audio

log = logging.getLogger("ltxlab.generate")
ADAPTER_NAME = "lora"


def lora_file(path: Path) -> Path:
    """The safetensors file of ``path`` (a diffusers LoRA folder holds pytorch_lora_weights.safetensors)."""
    path = Path(path)
    if path.is_dir():
        path = path / DIFFUSERS_FILE
    if not path.is_file():
        raise InputError(f"LoRA file not found: {path}")
    if path.suffix != ".safetensors":
        raise InputError(f"LoRA must be a .safetensors file, got {path.name}")
    return path


def load_lora(transformer: nn.Module, path: Path, adapter_name: str = ADAPTER_NAME) -> None:
    """Attach a LoRA from either exported format; diffusers converts ComfyUI keys and keeps alpha from the
    diffusers format's metadata (the ComfyUI file has alpha baked into lora_B)."""
    from diffusers import LTX2Pipeline

    try:
        state, metadata = LTX2Pipeline.lora_state_dict(str(lora_file(path)), return_lora_metadata=True)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read LoRA {Path(path).name}: {e}") from None
    extra = sorted({k.split(".", 1)[0] for k in state if not k.startswith("transformer.")})
    if extra:
        warnings.warn(f"LoRA keys for {extra} are ignored: only the transformer is adapted", stacklevel=2)
    state = {k: v for k, v in state.items() if k.startswith("transformer.")}
    if not state:
        raise InputError(f"LoRA {Path(path).name} has no transformer weights")
    transformer.load_lora_adapter(state, prefix="transformer", adapter_name=adapter_name, metadata=metadata)


def lora_training_config(path: Path) -> dict[str, Any]:
    """The run's config.json next to the LoRA (or one folder up, for the diffusers copy); {} when absent."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    for candidate in (folder / CONFIG_FILE, folder.parent / CONFIG_FILE):
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text())
            except (OSError, ValueError):
                return {}
    return {}


@dataclass
class GenerateInputs:
    prompt: str
    image: str | None
    audio: str | None
    generate_audio: bool = True
    audio_normalize: bool = True
    audio_preserve_pitch: bool = True

    @property
    def audio_mode(self) -> str:
        return "condition" if self.audio else ("generate" if self.generate_audio else "absent")


def generate_clip(model_cfg: ModelConfig, lora: Path | None, inputs: GenerateInputs, settings: SamplingSettings,
                     work_dir: Path, device: torch.device, out: Path | None = None) -> RenderedClip:
    """Encode the prompts (text stack loaded, then freed), prepare the clip, load the transformer (+ LoRA),
    sample and decode with the shared `ClipRunner`; write ``out`` when given. ``lora=None`` samples the base
    model (for comparisons)."""
    text = loader.load_text_stack(model_cfg).to(device)
    prompt = encode_prompts(text, [inputs.prompt]).to("cpu")
    negative = encode_prompts(text, [settings.negative_prompt]).to("cpu")
    del text  # Gemma 3 12B (~24 GB) must be gone before the 19B transformer arrives
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    runner = ClipRunner(model_cfg, settings, inputs.audio_mode, device)
    clip = runner.prepare(prompt, negative, inputs.image, inputs.audio, work_dir, normalize=inputs.audio_normalize,
                          preserve_pitch=inputs.audio_preserve_pitch)
    transformer = loader.load_transformer(model_cfg).to(device)
    if lora is not None:
        load_lora(transformer, lora)
    return runner.render(transformer, clip, out, progress=True)


# Flags of the sampling settings: one per `SamplingSettings` field, named after it, default from it.
FLAG_ALIASES = {"number_of_frames": ["--frames"], "frame_rate": ["--fps"], "inference_steps": ["--steps"]}
FLAG_CHOICES = {"resolution": list(RESOLUTIONS), "aspect_ratio": list(ASPECT_RATIOS)}
FLAG_HELP = {"audio_stg_scale": "default: --stg-scale", "image_crf": "start-image H.264 re-encode CRF; 0 = off",
             "width": "override the resolution table (multiple of 32)", "height": "see --width"}


def _add_sampling_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sampling (defaults: ltxlab.sample.settings, the same as validation previews)")
    hints = get_type_hints(SamplingSettings)
    defaults = SamplingSettings()
    for f in fields(SamplingSettings):
        hint = hints[f.name]
        kind = next((t for t in (int, float, str) if t == hint or t in get_args(hint)), str)
        extra: dict[str, Any] = {"nargs": "+"} if get_origin(hint) is list else {}
        if extra:
            kind = int
        group.add_argument(f"--{f.name.replace('_', '-')}", *FLAG_ALIASES.get(f.name, []), dest=f.name, type=kind,
                           default=getattr(defaults, f.name), choices=FLAG_CHOICES.get(f.name),
                           help=FLAG_HELP.get(f.name), **extra)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ltxlab.generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--lora", required=True, type=Path, help="LoRA .safetensors (either exported format)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--image", help="start image (path or https URL); omit for text-to-video")
    p.add_argument("--audio", help="a2v conditioning audio (path or https URL); needs --image")
    p.add_argument("--no-audio", action="store_true", help="i2v/t2v: video only (a silent track is written)")
    p.add_argument("--no-audio-normalize", action="store_true", help="a2v: do not peak-normalise the audio")
    p.add_argument("--no-preserve-pitch", action="store_true", help="a2v: trim/pad the audio instead of stretching")
    p.add_argument("--out", required=True, type=Path, help="output .mp4")
    _add_sampling_flags(p)
    m = p.add_argument_group("model")
    m.add_argument("--model", choices=[*loader.MODEL_NAMES, "tiny_random"], default=ModelConfig.name,
                   help="tiny: as model=tiny (see --tiny-weights); tiny_random: always random weights")
    m.add_argument("--tiny-weights", default=BUILTIN,
                   help=f"tiny: {BUILTIN!r} (the package's pretrained weights, default), a tools/pretrain_tiny.py "
                        "folder, or '' (random)")
    m.add_argument("--checkpoint-dir", help="ltx23: diffusers-format folder")
    m.add_argument("--transformer-file", help="ltx23: Lightricks single-file checkpoint")
    m.add_argument("--video-vae-file")
    m.add_argument("--audio-vae-file")
    m.add_argument("--text-encoder-dir", help="ltx23: Gemma 3 12B folder")
    m.add_argument("--max-sequence-length", type=int, help="prompt tokens (default: the model config's)")
    m.add_argument("--dtype", choices=["float32", "bfloat16"], help="default: bfloat16 on CUDA, else float32")
    m.add_argument("--model-seed", type=int, default=0, help="tiny: seed of the random weights")
    m.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    m.add_argument("--work-dir", type=Path, help="downloads go here (default: next to --out)")
    return p


def _check(args: argparse.Namespace) -> tuple[GenerateInputs, SamplingSettings]:
    lora_file(args.lora)
    if args.audio and not args.image:
        raise InputError("--audio (a2v) needs --image: a2v conditions on the start image and the audio")
    for name in ("image", "audio"):
        value = getattr(args, name)
        if value and "://" not in value and not Path(value).is_file():
            raise InputError(f"--{name} not found: {value}")
    settings = SamplingSettings(**{f.name: getattr(args, f.name) for f in fields(SamplingSettings)})
    if settings.number_of_frames < 9 or (settings.number_of_frames - 1) % 8:
        raise InputError(f"--frames must be 8k+1 and at least 9, got {settings.number_of_frames}")
    problems = sampling_problems(settings)
    if problems:
        name, reason = problems[0].split(":", 1)
        raise InputError(f"--{name.replace('_', '-')}:{reason}")
    if args.audio and unused_with_frozen_audio(settings):
        log.warning("%s: no effect with --audio (a2v keeps the conditioning audio frozen, with no audio guidance)",
                    ", ".join(unused_with_frozen_audio(settings)))
    if args.out.suffix.lower() != ".mp4":
        raise InputError(f"--out must be an .mp4 file, got {args.out.name}")
    inputs = GenerateInputs(prompt=args.prompt, image=args.image, audio=args.audio, generate_audio=not args.no_audio,
                            audio_normalize=not args.no_audio_normalize,
                            audio_preserve_pitch=not args.no_preserve_pitch)
    return inputs, settings


def _warn_mismatch(args: argparse.Namespace) -> None:
    trained = lora_training_config(args.lora)
    p = trained.get("first_frame_conditioning_p")
    if not args.image and (trained.get("training_type") == "a2v" or (p is not None and float(p) >= 1.0)):
        log.warning("This LoRA was trained with the first frame always held (training_type=%s, "
                    "first_frame_conditioning_p=%s): text-only generation is outside what it learned; pass --image",
                    trained.get("training_type"), p)
    if trained.get("training_type") == "a2v" and not args.audio:
        log.warning("This LoRA was trained for a2v (audio-driven video): pass --audio for the intended use")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = _parser().parse_args(argv)
    device = torch.device(args.device)
    try:
        inputs, settings = _check(args)
        _warn_mismatch(args)
        model_cfg = ModelConfig(
            name="tiny" if args.model == "tiny_random" else args.model, seed=args.model_seed,
            tiny_weights="" if args.model == "tiny_random" else args.tiny_weights, checkpoint_dir=args.checkpoint_dir,
            transformer_file=args.transformer_file, video_vae_file=args.video_vae_file,
            audio_vae_file=args.audio_vae_file, text_encoder_dir=args.text_encoder_dir,
            dtype=args.dtype or ("bfloat16" if device.type == "cuda" else "float32"),
        )
        if args.max_sequence_length:
            model_cfg.max_sequence_length = args.max_sequence_length
        work_dir = args.work_dir or args.out.resolve().parent / ".ltxlab_inputs"
        generate_clip(model_cfg, args.lora, inputs, settings, work_dir, device, out=args.out)
    except (LtxlabError, MediaError) as e:
        print_error_line(str(e))
        return 2
    log.info("Wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
