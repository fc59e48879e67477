"""Spiking neuron nodes of converted networks and their update rules."""

from .nodes import (BACKENDS, METHODS, ConvertedIFNode, SignedIFNode, SpikingNode, SRPIFNode,
                    SRPSignedIFNode, begin_main_phase, check_backend, node_for, spiking_nodes, uses_srp)

__all__ = ["BACKENDS", "METHODS", "SpikingNode", "ConvertedIFNode", "SignedIFNode", "SRPIFNode",
           "SRPSignedIFNode", "node_for", "spiking_nodes", "uses_srp", "begin_main_phase", "check_backend"]
