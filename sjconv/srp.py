"""SRP protocol helpers for running SRP nodes in any SpikingJelly network (METHODS.md §4).

    functional.reset_net(net)        # pre-run phase: masks cleared
    net(x_prerun)                    # tau steps, outputs discarded
    sjconv.srp.begin_main_phase(net) # masks set, potentials back to v0, counts to 0
    logits = net(x_main)             # T main steps
"""

from .neurons.nodes import begin_main_phase, uses_srp

DEFAULT_TAU = 4

__all__ = ["begin_main_phase", "uses_srp", "DEFAULT_TAU"]
