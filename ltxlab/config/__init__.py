"""Configuration: the schema, its validation, and where the shipped Hydra config tree lives."""

from pathlib import Path

# ltxlab/conf: the Hydra config tree ships inside the package, so an installed ltxlab (wheel, `pip install .`)
# composes from any directory. Every composer (the CLI, error reports, tests, tools) reads this one path.
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
