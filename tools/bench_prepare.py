"""Prepare-stage throughput against a bare PyAV decode of the same clips (issue 3, item 12; target ≥ 0.8).

    python tools/bench_prepare.py [--clips 12] [--seconds 4] [--size 640x360] [--bucket 512x512] [--frames 89]

Generates an i2v sample dataset (moving shapes + tone tracks) in a temp folder, then times, best of --repeats
(interleaved, so background load hits both sides alike):

* bare: every video frame of every clip decoded with PyAV and converted to RGB arrays, one clip after another,
  with PyAV's default decoder settings and again with its threaded decoder (``thread_type="AUTO"``);
* prepare: ``ingest`` + ``plan`` + ``iter_prepared`` (decode, resize-fill + centre crop to the bucket, audio
  cut/fitted/normalised) with --workers threads, releasing each clip's buffer as the encoder does.

Prints frames/s for each (prepare counts the frames it outputs), CPU ms per frame, and prepare/bare ratios.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av

from ltxlab.data.ingest import ingest
from ltxlab.data.prepare import PrepareSettings, iter_prepared, plan
from ltxlab.data.sample import make_i2v_dataset


def _size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def bare_decode(paths: list[Path], threaded: bool, with_audio: bool = False) -> int:
    """Decode every video frame to RGB (and, with ``with_audio``, every audio frame to float arrays)."""
    frames = 0
    for p in paths:
        with av.open(str(p)) as c:
            vs = c.streams.video[0]
            if threaded:
                vs.thread_type = "AUTO"
            streams = [vs, *c.streams.audio[:1]] if with_audio else [vs]
            for f in c.decode(*streams):
                if isinstance(f, av.AudioFrame):
                    f.to_ndarray()
                    continue
                f.to_ndarray(format="rgb24")
                frames += 1
    return frames


def _timed(fn: Callable[[], int]) -> tuple[int, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    n = fn()
    return n, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--clips", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--size", type=_size, default=(640, 360), help="source WxH")
    ap.add_argument("--bucket", type=_size, default=(512, 512), help="training WxH")
    ap.add_argument("--frames", type=int, default=89)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--no-audio", action="store_true", help="prepare without audio (with_audio=false)")
    ap.add_argument("--repeats", type=int, default=3, help="best of N timings for each side")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_prepare-") as tmp:
        root = Path(tmp)
        make_i2v_dataset(root, num_clips=args.clips, seconds=args.seconds, size=args.size)
        paths = sorted(root.glob("*.mp4"))
        settings = PrepareSettings(
            mode="i2v",
            width=args.bucket[0],
            height=args.bucket[1],
            number_of_frames=args.frames,
            frame_rate=24,
            num_workers=args.workers,
            with_audio=False if args.no_audio else None,
        )

        def prepare() -> int:
            p = plan(ingest(root, "i2v"), settings)
            frames = 0
            for clip in iter_prepared(p):
                frames += clip.frames.shape[0]
                clip.release()  # as the encoder does: the buffer is reused for the next clip
            return frames

        runs: dict[str, Callable[[], int]] = {
            "bare PyAV decode (defaults)": lambda: bare_decode(paths, threaded=False),
            "bare PyAV decode (threaded)": lambda: bare_decode(paths, threaded=True),
            "bare PyAV decode (video+audio)": lambda: bare_decode(paths, threaded=False, with_audio=True),
            "prepare": prepare,
        }
        best: dict[str, tuple[int, float, float]] = {}
        for _ in range(args.repeats):
            for name, fn in runs.items():
                n, wall, cpu = _timed(fn)
                if name not in best or wall < best[name][1]:
                    best[name] = (n, wall, cpu)

    print(
        f"{args.clips} clips x {args.seconds:g} s at {args.size[0]}x{args.size[1]} -> "
        f"{args.bucket[0]}x{args.bucket[1]}x{args.frames}, workers={args.workers}, "
        f"audio {'off' if args.no_audio else 'on'}, {os.cpu_count()} CPUs, best of {args.repeats}"
    )
    fps = {}
    for name, (n, wall, cpu) in best.items():
        fps[name] = n / wall
        print(
            f"{name:31s}: {n:5d} frames in {wall:6.2f} s = {fps[name]:7.1f} frames/s ({cpu / n * 1e3:.2f} CPU ms/frame)"
        )
    for name in list(runs)[:3]:
        print(f"ratio prepare / {name}: {fps['prepare'] / fps[name]:.2f} (target >= 0.8)")


if __name__ == "__main__":
    main()
