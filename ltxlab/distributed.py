"""Who this process is in a multi-process run, and the few collectives the recipe needs outside DeepSpeed.

torchrun and the ``deepspeed`` launcher set RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT. A SLURM task
(Hydra's submitit launcher, or a bare ``srun``) has only SLURM_* variables: the same five are derived from them.
A plain ``python -m ltxlab`` is a world of one. Everything here is idempotent, so ``__main__`` (before Hydra) and
the recipe (inside a submitit task, where ``__main__`` never ran) can both call :func:`setup`.

"Main process" is global rank 0, never LOCAL_RANK 0 (that is one process per node).
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

T = TypeVar("T")

# A rank-0-only stage (ingest, prepare, encode) can take hours on a large dataset: the ranks waiting for it use a
# CPU group with this timeout, so NCCL's watchdog (10 minutes) never fires on a healthy run.
MAIN_ONLY_TIMEOUT = timedelta(hours=48)


@dataclass(frozen=True)
class World:
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``gpu[003-010,012],cpu1`` → ``gpu003``; ``a[1-2]-ib[5]`` → ``a1-ib5``."""
    first = re.split(r",(?![^\[]*\])", nodelist.strip())[0]
    # Each bracket expression contributes its first value, zero padding kept.
    return re.sub(r"\[([^\]]+)\]", lambda m: re.split(r"[-,]", m.group(1))[0], first)


def slurm_env(environ: Mapping[str, str]) -> dict[str, str]:
    """RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT derived from a SLURM task's environment.

    Empty outside a SLURM task or when a launcher already set RANK (``srun torchrun …``: torchrun's values win).
    """
    if "SLURM_PROCID" not in environ or "RANK" in environ:
        return {}
    nodelist = environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST") or environ.get(
        "SLURM_NODELIST", "127.0.0.1")
    tasks = environ.get("SLURM_STEP_NUM_TASKS") or environ.get("SLURM_NTASKS", "1")
    derived = {"RANK": environ["SLURM_PROCID"], "WORLD_SIZE": tasks,
               "LOCAL_RANK": environ.get("SLURM_LOCALID", "0"),
               "MASTER_ADDR": environ.get("MASTER_ADDR") or first_host(nodelist)}
    # Every task of a job computes the same port; different jobs sharing a node get different ones.
    job = environ.get("SLURM_JOB_ID", "0")
    derived["MASTER_PORT"] = environ.get("MASTER_PORT") or str(20000 + int(job) % 20000)
    return derived


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launched_world() -> World:
    """This process's place as the launcher (or SLURM) set it, changing nothing: a plain process is a world of
    one. The submitting side of Hydra's submitit launcher must not export defaults its SLURM tasks would
    inherit."""
    env = {**os.environ, **slurm_env(os.environ)}
    return World(rank=int(env.get("RANK", "0")), world_size=int(env.get("WORLD_SIZE", "1")),
                 local_rank=int(env.get("LOCAL_RANK", "0")))


def world_from_env() -> World:
    """Derive SLURM variables when needed, default a world of one, and return this process's place in it."""
    for key, value in slurm_env(os.environ).items():
        os.environ[key] = value
    if "RANK" not in os.environ:
        # A world of one still gets a process group from DeepSpeed: give it what a launcher would have set.
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    return World(rank=int(os.environ["RANK"]), world_size=int(os.environ.get("WORLD_SIZE", "1")),
                 local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def bind_device(world: World) -> torch.device:
    """This process's device: GPU LOCAL_RANK (made current before anything else touches CUDA), else the CPU."""
    import torch

    if not torch.cuda.is_available():
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if world.local_rank < count:
        index = world.local_rank
    elif count == 1:
        index = 0  # one visible GPU per process (SLURM's per-task GPU binding)
    else:
        raise RuntimeError(f"LOCAL_RANK={world.local_rank} but only {count} GPUs are visible to this process")
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


_state: dict[str, Any] = {}


def setup() -> World:
    """Idempotent: the environment, the device binding and (with several processes) the process group.

    The group has gloo for CPU tensors (the recipe's small collectives) and NCCL for CUDA tensors (DeepSpeed's);
    DeepSpeed adopts it instead of making its own.
    """
    if "world" in _state:
        return _state["world"]
    import torch  # deferred: importing this module stays cheap (`--help`, `--cfg` never load torch for it)

    world = world_from_env()
    device = bind_device(world)
    if world.is_distributed and not torch.distributed.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend, rank=world.rank, world_size=world.world_size)
    _state.update(world=world, device=device)
    return world


def world() -> World:
    return setup()


def device() -> torch.device:
    setup()
    return _state["device"]


def barrier() -> None:
    import torch

    if world().is_distributed:
        torch.distributed.barrier()


def broadcast_object(value: T, src: int = 0, group: Any = None) -> T:
    """``value`` as rank ``src`` holds it, on every rank."""
    import torch

    if not world().is_distributed:
        return value
    holder = [value]
    torch.distributed.broadcast_object_list(holder, src=src, group=group, device=torch.device("cpu"))
    return holder[0]


def all_gather_object(value: T) -> list[T]:
    import torch

    if not world().is_distributed:
        return [value]
    gathered: list[Any] = [None] * world().world_size
    torch.distributed.all_gather_object(gathered, value)
    return gathered


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on at least one (e.g. a SIGTERM one rank saw a step earlier)."""
    import torch

    if not world().is_distributed:
        return flag
    value = torch.tensor([1 if flag else 0], dtype=torch.int32)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())


def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of ``values`` across ranks (logged losses describe the whole step's samples)."""
    import torch

    if not world().is_distributed:
        return values
    total = values.clone()
    torch.distributed.all_reduce(total, op=torch.distributed.ReduceOp.SUM)
    return total / world().world_size


class MainProcessFailed(RuntimeError):
    """Raised on the other ranks when rank 0 failed in a stage they were waiting for."""


def run_on_main(stage: Callable[[], T]) -> T:
    """Run ``stage`` on rank 0 only while the other ranks wait; every rank returns rank 0's result.

    An exception on rank 0 is re-raised there and, on the other ranks, as the same error when it pickles (a bad
    dataset is a 422 on every rank), else as :class:`MainProcessFailed`, so no rank waits for a stage that died.
    """
    import torch

    current = world()
    if not current.is_distributed:
        return stage()
    if "main_only_group" not in _state:
        _state["main_only_group"] = torch.distributed.new_group(backend="gloo", timeout=MAIN_ONLY_TIMEOUT)
    group = _state["main_only_group"]
    outcome: tuple[bool, Any] = (False, None)
    failure: BaseException | None = None
    if current.is_main:
        try:
            outcome = (True, stage())
        except Exception as exc:
            failure = exc
            outcome = (False, _picklable(exc))
    ok, payload = broadcast_object(outcome, group=group)
    if failure is not None:
        raise failure
    if not ok:
        raise payload
    return payload


def _picklable(exc: Exception) -> Exception:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return MainProcessFailed(f"rank 0 failed: {type(exc).__name__}: {exc}")


def agree_launch_time() -> float:
    """Fix one wall-clock time for the whole launch (rank 0's): collective, so every rank calls it at the same
    point (``__main__``, before Hydra names the run directory)."""
    if "time" not in _state:
        _state["time"] = broadcast_object(time.time()) if world().is_distributed else time.time()
    return _state["time"]


def launch_time(pattern: str) -> str:
    """The ``${ltxlab_now:…}`` resolver: the agreed launch time, so the run directory is the same on every rank
    (Hydra's ``${now:…}`` is evaluated per process and can straddle a second). Never collective itself: where no
    time was agreed (one process; a submitit task, whose directory Hydra fixed at submission) it is this
    process's own."""
    when = _state.get("time")
    if when is None:
        when = _state.setdefault("time", time.time())
    return datetime.fromtimestamp(when).strftime(pattern)


def enter_run_dir(run_dir: Path) -> None:
    """Check that every rank resolved the same run directory, and leave its log file to rank 0.

    A directory that differs across ranks (``${now:…}`` in a user's ``hydra.run.dir``) would split one run
    into several folders: it is refused. Other ranks keep warnings and errors on their console (the launcher
    prefixes them).
    """
    from ltxlab.errors import ConfigError

    dirs = all_gather_object(str(run_dir.resolve()))
    if len(set(dirs)) > 1:
        shown = ", ".join(sorted(set(dirs)))
        raise ConfigError(f"hydra.run.dir resolved to different folders on different ranks ({shown}); use "
                          "${ltxlab_now:…} (one launch time for every rank) or a fixed path instead of ${now:…}")
    if not world().is_main:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
            root.removeHandler(handler)
            handler.close()
        logging.getLogger("ltxlab").setLevel(logging.WARNING)  # the console: rank 0's progress once, not N times
