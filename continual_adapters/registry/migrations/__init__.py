"""The registry's schema migrations, as alembic revisions: ``versions/`` holds one per schema version
(schema1 the baseline, then each step), ``env.py`` runs them on the connection the registry hands it.

They are run by registry/migrate.py through alembic's API, never by the ``alembic`` command: there
is no alembic.ini, so upgrading a registry needs nothing in the user's working directory.
"""
