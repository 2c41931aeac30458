"""The recipe: setup → latents (ingest, prepare, encode; cached) → train → export. Returns the final held-out
loss (``val/loss``) so Hydra sweepers can optimise it."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ltxlab import distributed
from ltxlab.config.resolution import bucket_size
from ltxlab.config.schema import Config
from ltxlab.config.validate import validate
from ltxlab.errors import (
    CacheCorrupt,
    InputError,
    TrainingDiverged,
    os_error_message,
    print_error_line,
    report_failure,
    report_input_error,
    write_error_file,
)
from ltxlab.sweep import FAILED_OBJECTIVE, JobIdentity, RunInfo, job_identity
from ltxlab.train.resume import finished_run

log = logging.getLogger("ltxlab")

EXIT_RESUMABLE = 75  # EX_TEMPFAIL: stopped early (signal), the same command resumes


@dataclass
class RunResult:
    finished: bool  # False when stopped early by a signal: the same command resumes
    final_loss: float | None
    val_loss: float | None = None  # the final held-out loss


def run(cfg: Config, run_dir: Path, launch_dir: Path, show_progress: bool = True) -> RunResult:
    # Deferred: torch, diffusers and DeepSpeed take seconds to import; a config the validator refuses exits first.
    from ltxlab.data.pipeline import build_latents_once
    from ltxlab.export import RunOutputs, billable_units, save_lora, training_config_json, write_config_file
    from ltxlab.train.guard import require_finite_weights
    from ltxlab.train.trainer import Trainer

    run_dir.mkdir(parents=True, exist_ok=True)
    latents = build_latents_once(cfg, run_dir, launch_dir, show_progress=show_progress)
    log.info("latents: %d samples in %s (%s)", latents.index.num_samples, latents.directory,
             "reused cache" if latents.reused else "built")
    done = finished_run(cfg, run_dir, latents.key, distributed.world().world_size)
    if done is not None:  # the same command again after success: leave every output as it is
        log.info("%s already finished this run (result.json); nothing to do. Use a new hydra.run.dir to train "
                 "again", run_dir)
        _clear_earlier_failure(run_dir)
        return RunResult(True, done.get("final_loss"), done.get("val_loss"))
    with Trainer(cfg, latents, run_dir, show_progress=show_progress) as trainer:  # closes on the way out
        trainer.setup()
        outcome = trainer.train()
    if not outcome.finished or not outcome.is_main_process:
        return RunResult(outcome.finished, outcome.final_loss, outcome.val_loss)
    size = bucket_size(cfg.resolution.name, cfg.resolution.aspect_ratio)
    meta = {"ltxlab_training_type": cfg.mode.name, "ltxlab_trigger_phrase": cfg.data.trigger_phrase,
            "ltxlab_rank": str(cfg.lora.rank), "ltxlab_alpha_baked": "true"}
    require_finite_weights(outcome.transformer, "after the last step")  # never export a non-finite LoRA
    lora_file, diffusers_file = save_lora(outcome.transformer, outcome.peft_config, run_dir, meta)
    config_file = write_config_file(run_dir, training_config_json(cfg, latents.index.with_audio, size))
    outputs = RunOutputs(lora_file=str(lora_file), lora_file_diffusers=str(diffusers_file),
                         config_file=str(config_file), video=str(outcome.reel) if outcome.reel else None,
                         debug_dataset=latents.debug_archive,
                         billable_units=billable_units(cfg.optim.number_of_steps), final_loss=outcome.final_loss,
                         val_loss=outcome.val_loss)
    outputs.write(run_dir)
    from ltxlab.plots import write_loss_plot  # deferred: matplotlib only once a run has finished

    write_loss_plot(run_dir)
    _clear_earlier_failure(run_dir)
    log.info("done: %s", json.dumps(asdict(outputs)))
    return RunResult(True, outcome.final_loss, outcome.val_loss)


def run_from_hydra(dict_cfg: DictConfig) -> float | None:
    """The Hydra task: returns the final ``val/loss``. In a multirun a failed job is recorded (error.json,
    run_info.json status "failed") and returns +inf, so the sweep goes on; a single run exits 2 on bad input."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    launch_dir = Path(hydra_cfg.runtime.cwd)
    job = job_identity(hydra_cfg)
    identity = job or JobIdentity(name=run_dir.name, group=None)
    main = distributed.setup().is_main  # only rank 0 writes the run's records
    try:
        distributed.enter_run_dir(run_dir)
        cfg = validate(dict_cfg)
        identity.apply(cfg)
        identity = JobIdentity(cfg.logger.run_name or identity.name, cfg.logger.group, identity.swept)
        quiet_libraries(cfg.logger.library_logs)
        result = run(cfg, run_dir, launch_dir, show_progress=cfg.logger.progress_bar)
    except InputError as err:
        if job is None:
            # the seeds' 422: one line, error.json (rank 0), exit 2, nothing trained
            report_input_error(err, run_dir if main else None)
        return _failed(job, run_dir, err.code, type(err).__name__, str(err))
    except (OSError, TrainingDiverged, CacheCorrupt) as err:
        if job is None:
            report_failure(err, run_dir if main else None)  # one line, error.json where writable, own exit code
        detail = os_error_message(err) if isinstance(err, OSError) else str(err)
        return _failed(job, run_dir, 500, type(err).__name__, detail)
    except Exception as err:
        if main:
            write_error_file(run_dir, 500, type(err).__name__, f"internal error: {err}")  # the seeds' 500
        if job is None:
            raise
        log.exception("job %s crashed", job.name)
        return _failed(job, run_dir, 500, type(err).__name__, str(err))
    status = "completed" if result.finished else "stopped"
    if main:
        RunInfo(identity.name, identity.group, identity.swept, status, result.val_loss,
                result.final_loss).write(run_dir)
    if not result.finished:
        sys.stderr.write("stopped before the last step; run the same command again to resume\n")
        sys.exit(EXIT_RESUMABLE)
    return result.val_loss


def _clear_earlier_failure(run_dir: Path) -> None:
    """A success supersedes the ``error.json`` of an earlier failed attempt in the same run directory."""
    (run_dir / "error.json").unlink(missing_ok=True)


def _failed(job: JobIdentity, run_dir: Path, status: int, kind: str, detail: str) -> float:
    if distributed.world().is_main:
        write_error_file(run_dir, status, kind, detail)
        RunInfo(job.name, job.group, job.swept, "failed", error=detail).write(run_dir)
    log.error("job %s failed (%d): %s; the sweep goes on", job.name, status, detail)
    print_error_line(f"job {job.name}: {detail}")
    return FAILED_OBJECTIVE


def quiet_libraries(verbose: bool) -> None:
    """DeepSpeed's and W&B's INFO banners only with ``logger.library_logs=true``."""
    level = logging.INFO if verbose else logging.WARNING
    for name in ("DeepSpeed", "wandb", "compilers"):  # compilers: the C compiler lines of DeepSpeed's op checks
        logger = logging.getLogger(name)
        logger.setLevel(level)
        for handler in logger.handlers:  # DeepSpeed's own stdout handler filters at WARNING too
            handler.setLevel(level)

