"""Result figures are explicit: a stored figure is present with its value, or absent and unknown.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30

Before this revision the measured figures of LatencyResult, MemoryResult, PowerResult and
ThermalResult were plain proto3 scalars, and a stored result document dropped every figure
whose value was zero: a figure absent from a section that was present, and not named in the
result's ``unavailable`` list (by itself or by its section), had been measured as zero. Those
figures are now proto3 ``optional`` and readers take "absent" to mean "not measured", so this
revision writes each such zero into the stored document. Figures named in ``unavailable`` stay
absent. Nested readings (rails, zones, clocks) are not touched: readers already treated their
absent figures as unknown.

In SQL (one UPDATE per figure), so that ``hilfarm controller migrate --sql`` writes it too.
"""
from typing import Sequence, Union

from alembic import op

revision: str = "0004"
down_revision: Union[str, Sequence[str], None] = "0003"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# The figures that became optional in this revision (farm.proto as it was then).
FIGURES = {
    "latency": ("load_seconds", "first_inference_seconds", "warmup_seconds", "total_seconds", "min_seconds",
                "mean_seconds", "p50_seconds", "p90_seconds", "p95_seconds", "p99_seconds", "max_seconds",
                "std_seconds", "cv", "throughput_per_second", "drift_ratio"),
    "memory": ("baseline_peak_bytes", "baseline_rss_bytes", "peak_bytes", "model_delta_bytes",
               "model_file_bytes"),
    "power": ("idle_watts", "active_watts", "energy_per_inference_joules", "sample_rate_hz"),
    "thermal": ("throttled", "throttled_fraction", "cooldown_seconds"),
}
# The zero each kind of figure had in proto3 JSON.
ZERO = {"throttled": "false"}


def _postgresql(section: str, name: str) -> str:
    zero = ZERO.get(name, "0")
    return (f"UPDATE jobs SET result = jsonb_set(result, '{{{section},{name}}}', '{zero}'::jsonb) "
            f"WHERE jsonb_typeof(result->'{section}') = 'object' AND NOT (result->'{section}' ? '{name}') "
            f"AND NOT (COALESCE(result->'unavailable', '[]'::jsonb) @> '[{{\"field\": \"{section}.{name}\"}}]') "
            f"AND NOT (COALESCE(result->'unavailable', '[]'::jsonb) @> '[{{\"field\": \"{section}\"}}]')")


def _sqlite(section: str, name: str) -> str:
    zero = "json('false')" if name in ZERO else "0"
    return (f"UPDATE jobs SET result = json_set(result, '$.{section}.{name}', {zero}) "
            f"WHERE json_type(result, '$.{section}') = 'object' AND json_type(result, '$.{section}.{name}') IS NULL "
            f"AND NOT EXISTS (SELECT 1 FROM json_each(result, '$.unavailable') AS u "
            f"WHERE json_extract(u.value, '$.field') IN ('{section}.{name}', '{section}'))")


def upgrade() -> None:
    statement = _postgresql if op.get_context().dialect.name == "postgresql" else _sqlite
    for section, names in FIGURES.items():
        for name in names:
            op.execute(statement(section, name))


def downgrade() -> None:
    # The explicit zeros are what older readers took an absent figure to mean: nothing to undo.
    pass
