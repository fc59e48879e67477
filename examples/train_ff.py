#!/usr/bin/env python
"""Spiking forward-forward training vs BPTT on the same data. See `python examples/train_ff.py --help`."""
import sys

from sjconv.cli.train_ff import cli

if __name__ == "__main__":
    sys.exit(cli())
