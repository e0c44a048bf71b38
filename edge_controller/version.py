"""Version of the controller: the installed package's metadata, so that birth's
`controller_version` is what pip installed (pyproject.toml is the only place it is set)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("smartpole")
except PackageNotFoundError:  # a checkout on PYTHONPATH that pip never installed
    __version__ = "0+unknown"
