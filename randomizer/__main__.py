"""``python -m randomizer``: the same command line as the ``randomizer`` console script."""

from randomizer.commands import main

main()
