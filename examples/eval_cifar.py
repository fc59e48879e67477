#!/usr/bin/env python
"""Evaluate a QCFS checkpoint on CIFAR as an SNN. See `python examples/eval_cifar.py --help`."""
import sys

from sjconv.cli.eval_cifar import cli

if __name__ == "__main__":
    sys.exit(cli())
