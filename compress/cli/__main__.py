"""`python -m compress.cli ...` (as torchrun launches the ranks): the `compress` command."""
from compress.cli.main import main

main()
