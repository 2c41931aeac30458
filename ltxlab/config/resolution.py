"""The seeds' resolution table: one place, used by training buckets and validation previews alike."""

from __future__ import annotations

RESOLUTIONS: dict[str, dict[str, tuple[int, int]]] = {
    "low": {"16:9": (512, 288), "1:1": (512, 512), "9:16": (288, 512)},
    "medium": {"16:9": (768, 448), "1:1": (768, 768), "9:16": (448, 768)},
    "high": {"16:9": (960, 544), "1:1": (960, 960), "9:16": (544, 960)},
}
ASPECT_RATIOS = ("16:9", "1:1", "9:16")


def bucket_size(resolution: str, aspect_ratio: str) -> tuple[int, int]:
    """(width, height) in pixels for a resolution name and aspect ratio from the seeds' table."""
    return RESOLUTIONS[resolution][aspect_ratio]


def snap_frames(n: int) -> int:
    """Largest valid LTX frame count (8k+1) not above ``n``: the video VAE compresses time 8x causally."""
    return ((n - 1) // 8) * 8 + 1
