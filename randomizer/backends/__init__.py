"""Backends: the one seam between the commands or pages and the library.

:mod:`~randomizer.backends.interface` defines the protocols;
:mod:`~randomizer.backends.local` runs them in-process.
"""
