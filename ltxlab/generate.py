"""Generate one clip with a trained LoRA: ``python -m ltxlab.generate --lora LORA --prompt TEXT --out OUT.mp4``.

i2v: ``--image``; a2v: ``--image`` and ``--audio``; text-to-video: neither (warned about when the LoRA was trained
with the first frame always held). Uses the same sampler as the training previews and writes an mp4 with audio
(a2v: the fitted conditioning audio; otherwise generated audio, or silence with ``--no-audio``). The LoRA may be
either exported format (ComfyUI ``diffusion_model.`` keys or diffusers ``transformer.`` keys). Bad input exits
with status 2 and a one-line message.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ltxlab.config.resolution import ASPECT_RATIOS, RESOLUTIONS, bucket_size
from ltxlab.config.schema import DEFAULT_NEGATIVE_PROMPT
from ltxlab.data.media import MediaError
from ltxlab.data.media_write import write_video
from ltxlab.errors import InputError, LtxlabError
from ltxlab.export import CONFIG_FILE, DIFFUSERS_FILE
from ltxlab.models import loader
from ltxlab.models.codecs import decode_audio, decode_video, encode_audio, encode_video
from ltxlab.models.spec import ModelConfig
from ltxlab.models.text import encode_prompts
from ltxlab.sample.media_inputs import AUDIO_SAMPLE_RATE, load_conditioning_audio, load_start_image
from ltxlab.sample.preview import SILENT_SAMPLE_RATE, fit_track, image_to_pixels, to_uint8_frames, track_samples
from ltxlab.sample.sampler import SampleRequest, sample

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
    negative_prompt: str
    image: str | None
    audio: str | None
    num_frames: int
    fps: int
    width: int
    height: int
    generate_audio: bool = True
    audio_normalize: bool = True
    audio_preserve_pitch: bool = True


def generate_latents(model_cfg: ModelConfig, lora: Path | None, inputs: GenerateInputs, work_dir: Path,
                     device: torch.device, settings: dict[str, Any]) -> tuple[Tensor, Tensor | None, np.ndarray | None]:
    """Encode the prompt (text stack loaded then freed), the start image and audio, and sample.

    Returns (video latents, audio latents or None, the fitted a2v waveform at 16 kHz or None). ``lora=None``
    samples the base model (for comparisons). ``settings``: extra `SampleRequest` fields (steps, scales, seed).
    """
    text = loader.load_text_stack(model_cfg).to(device)
    prompt = encode_prompts(text, [inputs.prompt]).to("cpu")
    negative = encode_prompts(text, [inputs.negative_prompt]).to("cpu")
    del text  # Gemma 3 12B (~24 GB) must be gone before the 19B transformer arrives
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()

    first = audio_latents = wave = None
    video_vae = loader.load_video_vae(model_cfg).to(device)
    if inputs.image:
        image = load_start_image(inputs.image, inputs.width, inputs.height, work_dir)
        first = encode_video(video_vae, image_to_pixels(image)).cpu()
    del video_vae
    if inputs.audio:
        wave = load_conditioning_audio(inputs.audio, inputs.num_frames / inputs.fps, work_dir,
                                       inputs.audio_normalize, inputs.audio_preserve_pitch)
        audio_latents = encode_audio(loader.load_audio_vae(model_cfg).to(device), torch.from_numpy(wave)[None])

    transformer = loader.load_transformer(model_cfg).to(device)
    if lora is not None:
        load_lora(transformer, lora)
    request = SampleRequest(prompt=prompt, negative=negative, num_frames=inputs.num_frames, height=inputs.height,
                            width=inputs.width, fps=float(inputs.fps), first_frame=first, audio=audio_latents,
                            generate_audio=inputs.generate_audio and audio_latents is None, **settings)
    video, audio = sample(transformer, loader.load_scheduler(model_cfg), request, progress=True)
    return video, (None if audio_latents is not None else audio), wave


def write_clip(model_cfg: ModelConfig, out: Path, video: Tensor, audio: Tensor | None, wave: np.ndarray | None,
               num_frames: int, fps: int, device: torch.device) -> None:
    """Decode and write the mp4: a2v plays its conditioning audio, else the generated audio, else silence."""
    frames = to_uint8_frames(decode_video(loader.load_video_vae(model_cfg).to(device), video))
    if wave is not None:
        track, rate = fit_track(wave, track_samples(num_frames, fps, AUDIO_SAMPLE_RATE)), AUDIO_SAMPLE_RATE
    elif audio is not None:
        decoded, rate = decode_audio(loader.load_audio_vae(model_cfg).to(device),
                                     loader.load_vocoder(model_cfg).to(device), audio)
        track = fit_track(decoded[0].cpu().numpy(), track_samples(num_frames, fps, rate))
    else:
        rate = SILENT_SAMPLE_RATE
        track = np.zeros((2, track_samples(num_frames, fps, rate)), np.float32)
    write_video(out, frames, fps, audio=track, sample_rate=rate)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ltxlab.generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--lora", required=True, type=Path, help="LoRA .safetensors (either exported format)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative-prompt", default=DEFAULT_NEGATIVE_PROMPT)
    p.add_argument("--image", help="start image (path or https URL); omit for text-to-video")
    p.add_argument("--audio", help="a2v conditioning audio (path or https URL); needs --image")
    p.add_argument("--no-audio", action="store_true", help="i2v/t2v: video only (a silent track is written)")
    p.add_argument("--no-audio-normalize", action="store_true", help="a2v: do not peak-normalise the audio")
    p.add_argument("--no-preserve-pitch", action="store_true", help="a2v: trim/pad the audio instead of stretching")
    p.add_argument("--out", required=True, type=Path, help="output .mp4")
    p.add_argument("--frames", type=int, default=89, help="8k+1 frames")
    p.add_argument("--fps", type=int, default=24)
    p.add_argument("--resolution", choices=list(RESOLUTIONS), default="medium")
    p.add_argument("--aspect-ratio", choices=list(ASPECT_RATIOS), default="1:1")
    p.add_argument("--width", type=int, help="override the resolution table (multiple of 32)")
    p.add_argument("--height", type=int, help="override the resolution table (multiple of 32)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--guidance-scale", type=float, default=3.0)
    p.add_argument("--audio-guidance-scale", type=float, default=7.0)
    p.add_argument("--stg-scale", type=float, default=1.0)
    p.add_argument("--stg-blocks", type=int, nargs="+", default=[28])
    p.add_argument("--guidance-rescale", type=float, default=0.7)
    p.add_argument("--modality-scale", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    m = p.add_argument_group("model")
    m.add_argument("--model", choices=list(loader.MODEL_NAMES), default="ltx23")
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


def _check(args: argparse.Namespace) -> GenerateInputs:
    lora_file(args.lora)
    if args.audio and not args.image:
        raise InputError("--audio (a2v) needs --image: a2v conditions on the start image and the audio")
    for name in ("image", "audio"):
        value = getattr(args, name)
        if value and "://" not in value and not Path(value).is_file():
            raise InputError(f"--{name} not found: {value}")
    if args.frames < 9 or (args.frames - 1) % 8:
        raise InputError(f"--frames must be 8k+1 and at least 9, got {args.frames}")
    if args.fps <= 0:
        raise InputError(f"--fps must be positive, got {args.fps}")
    if args.steps < 2:
        raise InputError(f"--steps must be at least 2, got {args.steps}")
    width, height = bucket_size(args.resolution, args.aspect_ratio)
    width, height = args.width or width, args.height or height
    if width % 32 or height % 32 or width <= 0 or height <= 0:
        raise InputError(f"width and height must be positive multiples of 32, got {width}x{height}")
    if args.out.suffix.lower() != ".mp4":
        raise InputError(f"--out must be an .mp4 file, got {args.out.name}")
    return GenerateInputs(prompt=args.prompt, negative_prompt=args.negative_prompt, image=args.image,
                          audio=args.audio, num_frames=args.frames, fps=args.fps, width=width, height=height,
                          generate_audio=not args.no_audio, audio_normalize=not args.no_audio_normalize,
                          audio_preserve_pitch=not args.no_preserve_pitch)


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
        inputs = _check(args)
        _warn_mismatch(args)
        model_cfg = ModelConfig(
            name=args.model, seed=args.model_seed, checkpoint_dir=args.checkpoint_dir,
            transformer_file=args.transformer_file, video_vae_file=args.video_vae_file,
            audio_vae_file=args.audio_vae_file, text_encoder_dir=args.text_encoder_dir,
            dtype=args.dtype or ("bfloat16" if device.type == "cuda" else "float32"),
        )
        if args.max_sequence_length:
            model_cfg.max_sequence_length = args.max_sequence_length
        settings = {"steps": args.steps, "guidance_scale": args.guidance_scale,
                    "audio_guidance_scale": args.audio_guidance_scale, "stg_scale": args.stg_scale,
                    "stg_blocks": args.stg_blocks, "guidance_rescale": args.guidance_rescale,
                    "modality_scale": args.modality_scale, "seed": args.seed}
        work_dir = args.work_dir or args.out.resolve().parent / ".ltxlab_inputs"
        video, audio, wave = generate_latents(model_cfg, args.lora, inputs, work_dir, device, settings)
        write_clip(model_cfg, args.out, video, audio, wave, inputs.num_frames, inputs.fps, device)
    except (LtxlabError, MediaError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    log.info("Wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
