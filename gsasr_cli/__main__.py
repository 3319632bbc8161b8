"""`python -m gsasr_cli`."""

from .cli import main

main()
