"""The trial server: one process on the trial's host holds the key and the database.

Everyone else logs in to it: the remote CLI through the JSON API under
``/api/v1`` (:mod:`~randomizer.server.api`). Every route calls the one
:class:`~randomizer.backends.interface.Backend` protocol through a
:class:`~randomizer.backends.local.LocalBackend` bound to the caller's
principal; the server holds no rule of its own.
"""
