"""jobs agent state index

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 09:00:00.000000

Every lease, heartbeat batch, placement note and artifact download asks for the job an agent
holds (its agent id and an active state). The index on `agent_id` alone made each of those read
every job the agent had ever run, a cost that grows for as long as the device serves. The index
on (agent_id, state) replaces it.
"""
from typing import Sequence, Union

from alembic import op


revision: str = '0007'
down_revision: Union[str, Sequence[str], None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_agent_id')
        batch_op.create_index('ix_jobs_agent_state', ['agent_id', 'state'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_agent_state')
        batch_op.create_index('ix_jobs_agent_id', ['agent_id'], unique=False)
