#!/usr/bin/env python
"""Whole pipeline on real data without downloads. See `python examples/demo_digits.py --help`."""
import sys

from sjconv.cli.demo_digits import cli

if __name__ == "__main__":
    sys.exit(cli())
