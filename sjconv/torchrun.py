"""What torchrun tells each process it starts, through the environment (``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``): the one place sjconv reads those variables.

It imports no torch, so the command-line tools check launch-dependent arguments (``--download``
with several processes) before torch is imported; :mod:`sjconv.distributed` starts the process
group from the same readings.
"""

import os

from .errors import ConfigError

#: variables torchrun sets for every process it starts
ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def launched() -> bool:
    """True when this process was started by torchrun (or another launcher setting its variables)."""
    return all(name in os.environ for name in ENV)


def launched_world_size() -> int:
    """Processes torchrun started (1 without torchrun); readable before any process group starts."""
    return env_int("WORLD_SIZE") if launched() else 1


def env_int(name: str) -> int:
    """The whole number in environment variable ``name`` (a torchrun variable), else a :class:`ConfigError`."""
    try:
        return int(os.environ[name])
    except ValueError:
        raise ConfigError(f"environment variable {name}={os.environ[name]!r} is not a whole number "
                          "(it is set by torchrun)") from None
