"""agents profile id index

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 08:00:00.000000

A queued job is explained with the first agents of its profile by id (every submission and
watch of a queued job); the index on `profile` alone left each of those reads sorting every
agent of the profile. The index on (profile, id) replaces it.
"""
from typing import Sequence, Union

from alembic import op


revision: str = '0006'
down_revision: Union[str, Sequence[str], None] = '0005'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.drop_index('ix_agents_profile')
        batch_op.create_index('ix_agents_profile_id', ['profile', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.drop_index('ix_agents_profile_id')
        batch_op.create_index('ix_agents_profile', ['profile'], unique=False)
