"""``python -m ltxlab.request JOB.json [overrides…]``: run one request of the seeds' API (``/i2v`` or ``/a2v``).

JOB.json holds the seeds' parameter names, exactly, plus ``mode`` (``i2v`` | ``a2v``, default ``i2v``). Each
parameter maps onto one Hydra key through ``PARAMETERS``, the one table; a parameter left out takes the config's
default, which is the seeds' default for that mode (``preset=seed``, ``ltxlab/conf/mode/<mode>.yaml``), so no default is
written twice. Ranges and choices are checked by ``ltxlab.config.validate`` as for any run; this module checks
names, modes and JSON types. Extra command-line overrides (``model=ltx23 model.checkpoint_dir=…``,
``hydra.run.dir=…``) are appended after the request's.

Outputs in the run directory: ``result.json`` (``lora_file``, ``config_file``, ``video`` when validation samples
were given, ``debug_dataset`` when enabled, ``billable_units`` = max(100, number_of_steps)); a failed request
leaves ``error.json`` ``{"status": 422 | 500, "detail": …, "billable_units": 0}``: 422 for bad input or a failed
dataset download (exit 2), 500 for an internal failure (exit 1).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ltxlab.errors import InputError, report_input_error

MODES = ("i2v", "a2v")
BOTH = MODES


class RequestError(InputError):
    """A request that breaks the seeds' schema (unknown or wrong-mode parameter, wrong JSON type)."""


@dataclass(frozen=True)
class Param:
    key: str  # the Hydra config key
    kind: str  # the seeds' type: string | integer | number | boolean | boolean_or_null | validation
    modes: tuple[str, ...] = BOTH
    required: bool = False


# The seeds' parameters, both endpoints (/work/shared/seeds/{i2v,a2v}-trainer.txt) → config keys.
PARAMETERS: dict[str, Param] = {
    "training_data_url": Param("data.source", "string", required=True),
    "trigger_phrase": Param("data.trigger_phrase", "string"),
    "rank": Param("lora.rank", "integer"),
    "number_of_steps": Param("optim.number_of_steps", "integer"),
    "learning_rate": Param("optim.learning_rate", "number"),
    "first_frame_conditioning_p": Param("mode.first_frame_conditioning_p", "number", modes=("i2v",)),
    "number_of_frames": Param("data.number_of_frames", "integer"),
    "frame_rate": Param("data.frame_rate", "integer"),
    "resolution": Param("resolution.name", "string"),
    "aspect_ratio": Param("resolution.aspect_ratio", "string"),
    "auto_scale_input": Param("data.auto_scale_input", "boolean"),
    "split_input_into_scenes": Param("data.split_input_into_scenes", "boolean"),
    "split_input_duration_threshold": Param("data.split_input_duration_threshold", "number"),
    "with_audio": Param("audio.with_audio", "boolean_or_null", modes=("i2v",)),
    "audio_normalize": Param("audio.normalize", "boolean"),
    "audio_preserve_pitch": Param("audio.preserve_pitch", "boolean"),
    "validation": Param("validation.samples", "validation"),
    "validation_negative_prompt": Param("validation.negative_prompt", "string"),
    "validation_number_of_frames": Param("validation.number_of_frames", "integer"),
    "validation_frame_rate": Param("validation.frame_rate", "integer"),
    "validation_resolution": Param("validation.resolution", "string"),
    "validation_aspect_ratio": Param("validation.aspect_ratio", "string"),
    "stg_scale": Param("validation.stg_scale", "number"),
    "debug_dataset": Param("data.debug_dataset", "boolean"),
}
# Fields of one `validation` entry per mode, and the required ones.
VALIDATION_FIELDS = {"i2v": ("prompt", "image_url"), "a2v": ("prompt", "image_url", "audio_url")}
VALIDATION_REQUIRED = {"i2v": ("image_url",), "a2v": ("image_url", "audio_url")}

_TYPE_NAMES = {"string": "a string", "integer": "an integer", "number": "a number", "boolean": "a boolean",
               "boolean_or_null": "a boolean or null", "validation": "an array of objects"}


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "boolean_or_null":
        return value is None or isinstance(value, bool)
    return isinstance(value, list) and all(isinstance(v, dict) for v in value)


def hydra_string(text: str) -> str:
    """``text`` as a quoted Hydra override value that reaches the config verbatim: ``${`` is escaped for OmegaConf
    (a request cannot interpolate, e.g. read the environment), then backslashes before a quote or the closing
    quote are doubled and quotes escaped for Hydra's grammar."""
    text = re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", text)
    text = re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), text)
    return f"'{text}'"


def hydra_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return hydra_string(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot pass {type(value).__name__} as an override")


def _validation_entries(mode: str, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    allowed, required = VALIDATION_FIELDS[mode], VALIDATION_REQUIRED[mode]
    for i, entry in enumerate(entries):
        for name, value in entry.items():
            if name not in allowed:
                other = [m for m in MODES if name in VALIDATION_FIELDS[m]]
                why = f"is for mode={other[0]} only" if other else "is not a validation field"
                raise RequestError(f"validation[{i}].{name} {why} (allowed: {', '.join(allowed)})")
            if not isinstance(value, str):
                raise RequestError(f"validation[{i}].{name} must be a string")
        missing = [name for name in required if not entry.get(name)]
        if missing:
            raise RequestError(f"validation[{i}].{missing[0]} is required in {mode}")
    return [{"prompt": e.get("prompt", ""), "image_url": e["image_url"], "audio_url": e.get("audio_url")}
            for e in entries]


def request_overrides(job: Any) -> list[str]:
    """The Hydra overrides of one request; a ``RequestError`` (422) for anything the seeds' schema rejects."""
    if not isinstance(job, dict):
        raise RequestError("the request must be a JSON object")
    mode = job.get("mode", "i2v")
    if mode not in MODES:
        raise RequestError(f"mode={mode!r} is not allowed: choose one of {', '.join(MODES)}")
    overrides = ["preset=seed", f"mode={mode}"]
    for name, value in job.items():
        if name == "mode":
            continue
        param = PARAMETERS.get(name)
        if param is None:
            raise RequestError(f"{name} is not a parameter of the {mode} endpoint")
        if mode not in param.modes:
            raise RequestError(f"{name} is a parameter of the {'/'.join(param.modes)} endpoint only, not {mode}")
        if not _type_ok(param.kind, value):
            raise RequestError(f"{name} must be {_TYPE_NAMES[param.kind]}, got {json.dumps(value)}")
        if param.kind == "validation":
            value = _validation_entries(mode, value)
        overrides.append(f"{param.key}={hydra_value(value)}")
    for name, param in PARAMETERS.items():
        if param.required and mode in param.modes and not job.get(name):
            raise RequestError(f"{name} is required")
    return overrides


def _run_dir(overrides: list[str]) -> Path:
    """Where error.json goes when the request fails before Hydra starts (``hydra.run.dir`` or Hydra's default)."""
    for override in overrides:
        if override.startswith("hydra.run.dir="):
            return Path(override.partition("=")[2])
    return Path("outputs") / datetime.now().strftime("%Y-%m-%d") / datetime.now().strftime("%H-%M-%S")


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if args else 2)
    job_path, extra = Path(args[0]), args[1:]
    try:
        try:
            job = json.loads(job_path.read_text())
        except (OSError, ValueError) as exc:
            raise RequestError(f"cannot read the request {job_path}: {exc}") from exc
        overrides = request_overrides(job)
    except RequestError as err:
        report_input_error(err, _run_dir(extra))
    from ltxlab.__main__ import main as ltxlab_main

    sys.argv = [sys.argv[0], *overrides, *extra]
    ltxlab_main()


if __name__ == "__main__":
    main()
