"""Bytes one cached LTX-2.3 sample takes in the shards (what `ltxlab.data.encode` writes), at a prompt length.

    python tools/cache_bytes.py                      # 1024 tokens, 768x768x89 with audio
    python tools/cache_bytes.py --tokens 256 --size 512 --frames 121
"""

from __future__ import annotations

import argparse

import torch
from safetensors.torch import save

from ltxlab.data.encode import prompt_tensors
from ltxlab.models import ltx23
from ltxlab.models.codecs import audio_latent_length
from ltxlab.models.text import PromptEmbeddings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--size", type=int, default=768, help="square frame size in pixels")
    parser.add_argument("--frames", type=int, default=89)
    parser.add_argument("--fps", type=float, default=24.0)
    args = parser.parse_args()
    t = ltx23.transformer_config()
    dtype = torch.bfloat16  # model=ltx23 stores its cache in bf16
    embeddings = PromptEmbeddings(video=torch.zeros(1, args.tokens, t["cross_attention_dim"]),
                                  audio=torch.zeros(1, args.tokens, t["audio_cross_attention_dim"]),
                                  mask=torch.ones(1, args.tokens))
    text = prompt_tensors(embeddings, 0, dtype)
    latent = args.size // 32
    video = {"video": torch.zeros(t["in_channels"], (args.frames - 1) // 8 + 1, latent, latent, dtype=dtype)}
    samples = round(args.frames / args.fps * 16000)
    audio = {"audio": torch.zeros(audio_latent_length(samples), t["audio_in_channels"], dtype=dtype)}
    for label, tensors in (("prompt embeddings", text), ("+ video latents", text | video),
                           ("+ audio latents", text | video | audio)):
        size = len(save(tensors))
        print(f"{label:>18}: {size:>11,} bytes ({size / 2**20:.2f} MiB)")


if __name__ == "__main__":
    main()
