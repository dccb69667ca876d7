"""Training, evaluation, throughput and FLOP counting behind the ``vheat`` command line."""
from .config import DEFAULTS, ConfigError, load_config

__all__ = ["DEFAULTS", "ConfigError", "load_config"]
