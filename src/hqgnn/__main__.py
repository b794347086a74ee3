"""``python -m hqgnn`` (and ``torchrun -m hqgnn``) runs the CLI."""

from .cli import main

main()
