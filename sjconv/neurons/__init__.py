"""Spiking neuron nodes of converted networks, as a strict stack, each layer importing only the
ones below it:

1. :mod:`.rules` (the reference update rules), :mod:`.records` (the state and kind records a
   layer call passes down), :mod:`.modes` (step modes), :mod:`.no_compile`
2. :mod:`.kernels` (the in-place torch loops, the fused CuPy kernels, their launch layout and
   self-check, the backend registry)
3. :mod:`.dynamics` (the functional seam: surrogate path, reference or kernel)
4. :mod:`.nodes` (the SpikingJelly nodes: state and conventions)
5. :mod:`.methods` (the method table with its node classes), :mod:`.fold` (the folded layout)
6. :mod:`.protocol` (the network protocol: nodes, step modes, pre-run, feeding, ``run``)

``tests/test_layering.py`` checks the order.
"""

from . import protocol, rules
from .kernels import BACKEND_TABLE, BACKENDS, Backend, check_backend, get_backend
from .methods import METHODS, Method, get_method, method_of_node, node_for, resolve
from .nodes import (GROUP_NODE_CLASSES, NODE_CLASSES, COSIFNode, COSSignedIFNode, ConvertedIFNode, GroupNode,
                    SignedGroupNode, SignedIFNode, SpikingNode, SRPIFNode, SRPSignedIFNode, check_neg_rule)
from .protocol import (ConvertedSNN, begin_prerun, converted_network, end_prerun, feed_steps, levels_of,
                       protocol_of, run, run_prerun, spiking_nodes, step_mode_of, unwrap)
from ..catalog import PRERUNS, PreRunKind

__all__ = ["BACKENDS", "BACKEND_TABLE", "Backend", "get_backend", "METHODS", "Method", "NODE_CLASSES", "PRERUNS",
           "PreRunKind", "SpikingNode", "ConvertedIFNode", "SignedIFNode", "SRPIFNode", "SRPSignedIFNode",
           "COSIFNode", "COSSignedIFNode", "ConvertedSNN", "converted_network", "get_method", "resolve",
           "method_of_node", "node_for", "spiking_nodes", "protocol_of", "unwrap", "step_mode_of", "feed_steps",
           "protocol", "run", "run_prerun", "begin_prerun", "end_prerun", "check_backend", "check_neg_rule",
           "GroupNode", "SignedGroupNode", "GROUP_NODE_CLASSES", "levels_of", "rules"]
