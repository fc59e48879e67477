"""Spiking neuron nodes of converted networks, their update rules, pre-run phases and the
table of conversion methods."""

from . import prerun
from .backends import BACKEND_TABLE, Backend, get_backend
from .methods import METHODS, Method, get_method, method_of_node, node_for, resolve
from .network import (ConvertedSNN, converted_network, feed_steps, levels_of, protocol_of, spiking_nodes,
                      step_mode_of, unwrap, uses_srp)
from .nodes import (BACKENDS, GROUP_NODE_CLASSES, NODE_CLASSES, COSIFNode, COSSignedIFNode, ConvertedIFNode,
                    GroupNode, SignedGroupNode, SignedIFNode, SpikingNode, SRPIFNode, SRPSignedIFNode, check_backend,
                    check_neg_rule)
from .prerun import PRERUNS, PreRunKind, run_prerun

#: older name of :func:`prerun.end` (the SRP recipe: pre-run, then begin the main phase)
begin_main_phase = prerun.end


__all__ = ["BACKENDS", "BACKEND_TABLE", "Backend", "get_backend", "METHODS", "Method", "NODE_CLASSES", "PRERUNS", "PreRunKind", "SpikingNode",
           "ConvertedIFNode", "SignedIFNode", "SRPIFNode", "SRPSignedIFNode", "COSIFNode", "COSSignedIFNode",
           "ConvertedSNN", "converted_network", "get_method", "resolve", "method_of_node", "node_for",
           "spiking_nodes", "uses_srp",
           "protocol_of", "unwrap", "step_mode_of", "feed_steps", "prerun", "run_prerun", "begin_main_phase",
           "check_backend", "check_neg_rule", "GroupNode", "SignedGroupNode", "GROUP_NODE_CLASSES", "levels_of"]
