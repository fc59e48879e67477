"""Exceptions that carry a message meant for the user: what is wrong and how to fix it.

The command-line tools print ``str(error)`` of these as one line and exit non-zero,
instead of showing a traceback.
"""


class SjconvError(Exception):
    """Base class of every error sjconv raises on purpose (bad input, missing files)."""


class CheckpointError(SjconvError):
    """A checkpoint does not match the architecture it is loaded into."""


class ConversionError(SjconvError):
    """The ANN holds a module the converter cannot turn into a spiking equivalent."""


class BackendUnavailableError(SjconvError, NotImplementedError):
    """A requested backend or method is not available on this install or machine."""
