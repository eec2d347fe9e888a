"""rnnexp: a command-line experiment runner for recurrent-network research."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rnnexp")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0+unknown"
