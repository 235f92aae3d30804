"""`python -m hilfarm.cli`: the `hilfarm` command."""

from hilfarm.cli import main

main()
