"""``python -m ltxlab.encode [overrides]``: the data stage alone (ingest, prepare, encode into ``data.cache_dir``).

Same config and overrides as training, so the cache it builds is the one a training run with that config
finds: on a cluster, encode in one job (one GPU is enough) and train in another (``python -m ltxlab …``, any rank
count), which then loads no text encoder or VAE. Under a launcher only rank 0 encodes.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from ltxlab.__main__ import hydra_entry

log = logging.getLogger("ltxlab")


def encode_from_hydra(dict_cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from ltxlab import distributed
    from ltxlab.config.validate import validate
    from ltxlab.data.pipeline import build_latents_once
    from ltxlab.errors import InputError, report_input_error

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    main = distributed.setup().is_main
    try:
        distributed.enter_run_dir(run_dir)
        cfg = validate(dict_cfg)
        latents = build_latents_once(cfg, run_dir, Path(hydra_cfg.runtime.cwd),
                                     show_progress=cfg.logger.progress_bar)
    except InputError as err:
        report_input_error(err, run_dir if main else None)
    log.info("latent cache %s: %d samples in %s (%s)", latents.key, latents.index.num_samples,
             latents.directory, "reused" if latents.reused else "built")


def main() -> None:
    hydra_entry(encode_from_hydra)


if __name__ == "__main__":
    main()
