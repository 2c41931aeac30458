"""A stand-in ``torchaudio`` module so ltx-core / ltx-pipelines 1.0.0 can be *imported* on this torch build.

torchaudio has no wheel that runs with the pinned CPU torch (DESIGN.md §3); ltx-core imports it at module level
only for the mel front-end (``ltx_core.model.audio_vae.ops``), and ``import ltx_pipelines`` pulls that in. The
parity tests never use ltx-core's mel extraction (ltxlab's own mel is checked against torchaudio's formula
elsewhere), so the shim only satisfies the import: touching any of its attributes raises, loudly.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types


class TorchaudioShimError(RuntimeError):
    pass


class _TorchaudioShim(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise TorchaudioShimError(f"torchaudio.{name} was used, but torchaudio is a test shim here "
                                  "(tests/parity/torchaudio_shim.py): no wheel fits the pinned torch")


def install_torchaudio_shim() -> None:
    """Register the shim unless a real torchaudio imports."""
    if "torchaudio" in sys.modules:
        return
    try:
        import torchaudio  # noqa: F401
        return
    except Exception:  # ImportError, or a CUDA-linked wheel failing to load
        sys.modules.pop("torchaudio", None)
    shim = _TorchaudioShim("torchaudio", __doc__)
    shim.__spec__ = importlib.machinery.ModuleSpec("torchaudio", loader=None)
    sys.modules["torchaudio"] = shim
