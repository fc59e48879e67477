"""The refusal a spiking node raises when ``torch.compile`` (dynamo) traces it (why: :mod:`sjconv.guards`).

A ``raise`` written in traced code would only make dynamo fall back to running that frame
eagerly, where the node cannot tell it was meant to be compiled. A call of a
``torch.compiler.disable`` function is run for real instead, so its error reaches the caller,
whatever the compile backend. This module is imported only from inside that trace, when
``torch._dynamo`` is loaded anyway, so importing sjconv never pays for importing it.
"""

import torch

from ..guards import refuse_compiled


@torch.compiler.disable
def refuse_compile() -> None:
    """Raise the :class:`~sjconv.errors.ConfigError` of a compiled network."""
    refuse_compiled("sjconv spiking nodes do not run under torch.compile")
