"""What a multirun job is within its sweep: its swept values, W&B run name, group and tags, and its record.

Swept keys are those of ``hydra.sweeper.params`` (the ``sweep`` group's configs, Optuna's search space) plus the
sweep overrides of the command line (``lora.rank=8,32``, read back from the sweep's ``multirun.yaml``, or the
process arguments where the sweeper writes none). A job's values come from its own overrides, so the name is the
same whichever launcher ran it (in process, joblib, SLURM).

Every run (single or multirun) leaves ``run_info.json``: name, group, swept values, status and losses — what
``python -m ltxlab.compare`` reads, so hyperparameters never live only in ``.hydra/`` or a binary W&B file.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:
    from ltxlab.config.schema import Config

RUN_INFO = "run_info.json"
SWEEP_RECORD = "sweep.jsonl"  # one line per finished job, in the sweep directory
FAILED_OBJECTIVE = math.inf  # what a failed job returns: the worst loss, so grid and Optuna sweeps go on
# Short names for run names, tags and swept-value columns (`rank=16,lr=0.0004`); other keys keep their full path.
SHORT_NAMES = {"lora.rank": "rank", "optim.learning_rate": "lr", "mode.first_frame_conditioning_p": "p",
               "optim.number_of_steps": "steps"}


@dataclass
class JobIdentity:
    name: str
    group: str | None
    swept: dict[str, Any] = field(default_factory=dict)  # short name → value
    shown: dict[str, str] = field(default_factory=dict)  # short name → value as written (`4e-4`), for names/tags

    @property
    def tags(self) -> list[str]:
        return [f"{k}={self.shown.get(k) or format_value(v)}" for k, v in self.swept.items()]

    def apply(self, cfg: Config) -> None:
        """Fill the logger's name/group/tags the user left unset (a value the user gave is kept)."""
        logger = cfg.logger
        logger.run_name = logger.run_name or self.name
        logger.group = logger.group or self.group
        logger.tags = list(logger.tags) or self.tags
        logger.swept = dict(logger.swept) or dict(self.swept)


def short_name(key: str) -> str:
    return SHORT_NAMES.get(key, key)


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _parse_value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def _sweep_keys(command_line: list[str]) -> list[str]:
    keys = []
    parser = OverridesParser.create()
    for text in command_line:
        try:
            override = parser.parse_override(text)
        except Exception:  # not an override (a launcher's own argument): nothing swept there
            continue
        if override.is_sweep_override() and not override.key_or_group.startswith("hydra"):
            keys.append(override.key_or_group)
    return keys


def _command_line(hydra_cfg: DictConfig) -> list[str]:
    master = Path(hydra_cfg.sweep.dir) / "multirun.yaml"
    if master.exists():
        return list(OmegaConf.load(master).hydra.overrides.task)
    return [a for a in sys.argv[1:] if "=" in a and not a.startswith("-")]


def job_identity(hydra_cfg: DictConfig) -> JobIdentity | None:
    """The job's place in its sweep; None for a single run."""
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    params = hydra_cfg.sweeper.get("params") or {}
    keys = list(params) + [k for k in _sweep_keys(_command_line(hydra_cfg)) if k not in params]
    written: dict[str, str] = {}
    for text in hydra_cfg.overrides.task:
        key, _, value = text.partition("=")
        key = key.lstrip("+~")
        if key in keys:
            written[key] = value
    swept = {short_name(k): _parse_value(written[k]) for k in keys if k in written}
    # Grid values as the user wrote them (`lr=4e-4`); a sampler's long floats rounded (`lr=0.000123`).
    shown = {short_name(k): v if len(v) <= 10 else format_value(_parse_value(v)) for k, v in written.items()}
    identity = JobIdentity(name="", group=None, swept=swept, shown=shown)
    identity.name = ",".join(identity.tags) or f"job{hydra_cfg.job.num}"
    sweep_dir = Path(hydra_cfg.sweep.dir)
    # Named after the sweep config (`+sweep=rank_lr`); an ad-hoc sweep after the primary config.
    launched = OmegaConf.select(hydra_cfg, "runtime.choices.sweep") or hydra_cfg.job.config_name
    identity.group = f"{launched}-{'_'.join(sweep_dir.parts[-2:])}"
    return identity


@dataclass
class RunInfo:
    name: str
    group: str | None
    swept: dict[str, Any]
    status: str  # completed | stopped | failed
    val_loss: float | None = None
    final_loss: float | None = None
    error: str | None = None

    def write(self, run_dir: Path) -> Path:
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / RUN_INFO
        path.write_text(json.dumps(asdict(self), indent=2))
        return path


def read_run_info(run_dir: Path) -> RunInfo | None:
    path = run_dir / RUN_INFO
    return RunInfo(**json.loads(path.read_text())) if path.exists() else None


class SweepRecord(Callback):
    """Hydra callback (``hydra.callbacks`` in ``ltxlab/conf/config.yaml``): each multirun job appends its name, swept
    values, status and returned objective to ``<sweep dir>/sweep.jsonl``; the end of the sweep prints a summary
    naming the failed jobs and the best one."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        hydra_cfg = config.hydra
        if hydra_cfg.mode != RunMode.MULTIRUN:
            return
        run_dir = Path(hydra_cfg.runtime.output_dir)
        info = read_run_info(run_dir)
        value = job_return.return_value if job_return.status == JobStatus.COMPLETED else None
        objective = float(value) if isinstance(value, int | float) else None
        failed = job_return.status != JobStatus.COMPLETED or info is None or info.status == "failed"
        line = {"job": hydra_cfg.job.num, "dir": str(run_dir), "name": info.name if info else None,
                "swept": info.swept if info else {}, "status": "failed" if failed else info.status,
                "objective": objective if objective is not None and math.isfinite(objective) else None,
                "error": (info.error if info else None) or (None if not failed else repr(value))}
        with (Path(hydra_cfg.sweep.dir) / SWEEP_RECORD).open("a") as f:
            f.write(json.dumps(line) + "\n")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        path = Path(config.hydra.sweep.dir) / SWEEP_RECORD
        if not path.exists():
            return
        jobs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        failed = [j for j in jobs if j["status"] == "failed"]
        done = [j for j in jobs if j["objective"] is not None]
        print(f"sweep {config.hydra.sweep.dir}: {len(jobs)} job(s), {len(done)} with val/loss, {len(failed)} failed",
              file=sys.stderr)
        for job in failed:
            print(f"  failed: job {job['job']} ({job['name']}): {job['error']}", file=sys.stderr)
        if done:
            best = min(done, key=lambda j: j["objective"])
            print(f"  best: job {best['job']} ({best['name']}) val/loss {best['objective']:.4f}; compare with: "
                  f"python -m ltxlab.compare {config.hydra.sweep.dir}", file=sys.stderr)
