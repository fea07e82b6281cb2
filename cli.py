"""Run the randomizer command line from a checkout: ``python cli.py --help``.

The command line itself lives in :mod:`randomizer.commands`; an installed
copy runs it as the ``randomizer`` console script or ``python -m randomizer``.
"""

from randomizer.commands import main

if __name__ == "__main__":
    main()
