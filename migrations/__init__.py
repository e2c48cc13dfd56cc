"""Alembic migrations of the service's `clr_` tables; applied by `service.db.upgrade`.

A new revision, after changing `service/models.py`:
`python -c "from alembic import command; from service.db import alembic_config;
command.revision(alembic_config('sqlite:///./var/clrstudy.db'), 'what changed',
autogenerate=True)"` against an up-to-date database, then tidy the generated file.
"""
