"""Training, evaluation, throughput and FLOP counting behind the ``vheat`` command line."""
from .config import DEFAULTS, ConfigError, load_config
from .checkpoint import CheckpointError

__all__ = ["DEFAULTS", "ConfigError", "CheckpointError", "load_config"]
