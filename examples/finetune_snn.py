#!/usr/bin/env python
"""Fine-tune a converted QCFS SNN on CIFAR in SNN mode. See `python examples/finetune_snn.py --help`."""
import sys

from sjconv.cli.finetune_snn import cli

if __name__ == "__main__":
    sys.exit(cli())
