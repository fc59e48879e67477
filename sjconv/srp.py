"""SRP protocol helpers for running SRP nodes in any SpikingJelly network (docs/methods.md §4).

    functional.reset_net(net)        # pre-run phase: masks cleared
    net(x_prerun)                    # tau steps, outputs discarded
    sjconv.srp.begin_main_phase(net) # masks set, potentials back to v0, counts to 0
    logits = net(x_main)             # T main steps

The same protocol serves every pre-run kind (SRP and COS): see :mod:`sjconv.neurons.prerun`.
"""

from .neurons import begin_main_phase, uses_srp
from .neurons.prerun import PRERUNS

DEFAULT_TAU = PRERUNS["srp"].default_steps

__all__ = ["begin_main_phase", "uses_srp", "DEFAULT_TAU"]
