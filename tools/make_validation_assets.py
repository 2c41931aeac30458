"""Regenerate the small validation inputs shipped in ltxlab/assets/validation (used by `validation=sample`).

They come from the same generator as the sample datasets (a held-out seed, at the demo's 512×512), so previews
show the demo LoRA on an unseen clip (the i2v caption carries the trigger word): `i2v_start.png`,
`a2v_start.png` + `a2v_audio.wav`, and their captions (`*_prompt.txt`).

    python tools/make_validation_assets.py
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ltxlab.data.media import iter_video_frames, read_audio
from ltxlab.data.media_write import write_image, write_wav
from ltxlab.data.sample import DEMO_SECONDS, DEMO_SIZE, make_a2v_dataset, make_i2v_dataset

OUT = Path(__file__).resolve().parents[1] / "ltxlab" / "assets" / "validation"
SEED = 777  # not used by the sample datasets


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        i2v, a2v = Path(tmp) / "i2v", Path(tmp) / "a2v"
        make_i2v_dataset(i2v, num_clips=1, seconds=DEMO_SECONDS, size=DEMO_SIZE, seed=SEED)
        make_a2v_dataset(a2v, num_groups=1, seconds=DEMO_SECONDS, size=DEMO_SIZE, seed=SEED)
        clip = next(i2v.glob("*.mp4"))
        write_image(OUT / "i2v_start.png", next(iter_video_frames(clip)))
        group = next(a2v.glob("*_start.png")).name.removesuffix("_start.png")
        shutil.copy(a2v / f"{group}_start.png", OUT / "a2v_start.png")
        write_wav(OUT / "a2v_audio.wav", read_audio(a2v / f"{group}_audio.wav", sample_rate=16000), 16000)
        (OUT / "i2v_prompt.txt").write_text(clip.with_suffix(".txt").read_text())
        (OUT / "a2v_prompt.txt").write_text((a2v / f"{group}.txt").read_text())
    print(f"wrote {sorted(p.name for p in OUT.iterdir())} to {OUT}")


if __name__ == "__main__":
    main()
