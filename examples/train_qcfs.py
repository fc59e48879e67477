#!/usr/bin/env python
"""Train a QCFS ANN on CIFAR. See `python examples/train_qcfs.py --help`."""
import sys

from sjconv.cli.train_qcfs import cli

if __name__ == "__main__":
    sys.exit(cli())
