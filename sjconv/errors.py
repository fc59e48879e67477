"""Exceptions that carry a message meant for the user: what is wrong and how to fix it.

Every error sjconv raises on purpose is a :class:`SjconvError`, which is also a ``ValueError``
(so ``except ValueError`` keeps working for callers that expect the standard type). Library
messages name the Python parameter (``tau``, ``chunk``); the command-line tools print
``str(error)`` as one ``error:`` line, mapping parameter names to their flags, and exit non-zero
instead of showing a traceback.
"""


class SjconvError(ValueError):
    """Base class of every error sjconv raises on purpose (bad input, missing files)."""


class ConfigError(SjconvError):
    """A bad argument or combination of arguments (unknown method, tau < 0, chunk < 1, ...)."""


class CheckpointError(SjconvError):
    """A checkpoint does not match the architecture it is loaded into."""


class ConversionError(SjconvError):
    """The ANN holds a module the converter cannot turn into a spiking equivalent."""


class BackendUnavailableError(SjconvError, NotImplementedError):
    """A requested backend or method is not available on this install or machine."""
