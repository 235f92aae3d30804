"""alembic's entry point; the configuration is in hilfarm.controller.schema."""
from alembic import context

from hilfarm.controller.schema import run_migrations

run_migrations(context)
