"""Generate a small synthetic i2v or a2v dataset (optionally zipped) for smoke tests and demos.

python tools/make_sample_dataset.py --mode i2v --out /tmp/i2v --zip
python tools/make_sample_dataset.py --mode a2v --out /tmp/a2v --num 12 --start-video-groups 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ltxlab.data.sample import make_a2v_dataset, make_i2v_dataset, zip_dir


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 320x240, got {text!r}") from None
    if w < 16 or h < 16:
        raise argparse.ArgumentTypeError("size must be at least 16x16")
    return w, h


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("i2v", "a2v"), required=True)
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    p.add_argument("--zip", action="store_true", help="also write <out>.zip next to the folder")
    p.add_argument("--num", type=int, default=12, help="number of clips (i2v) or groups (a2v)")
    p.add_argument("--images", action="store_true", help="i2v only: write stills instead of clips")
    p.add_argument("--no-audio", action="store_true", help="i2v only: clips without an audio track")
    p.add_argument("--start-video-groups", type=int, default=0, help="a2v only: groups using a _start.mp4")
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--fps", type=int, default=24)
    p.add_argument("--size", type=_size, default=(320, 240), help="WIDTHxHEIGHT (default 320x240)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.num < 1:
        p.error("--num must be at least 1")
    if args.mode == "a2v" and (args.images or args.no_audio):
        p.error("--images/--no-audio only apply to --mode i2v")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    common = {"seconds": args.seconds, "fps": args.fps, "size": args.size, "seed": args.seed}
    if args.mode == "i2v":
        files = make_i2v_dataset(
            args.out, num_clips=args.num, with_audio=not args.no_audio, images=args.images, **common
        )
    else:
        files = make_a2v_dataset(
            args.out, num_groups=args.num, start_video_groups=args.start_video_groups, **common
        )
    print(f"wrote {len(files)} files to {args.out} in {time.perf_counter() - t0:.1f} s")
    if args.zip:
        zip_path = zip_dir(args.out, args.out.with_suffix(".zip"))
        print(f"wrote {zip_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
