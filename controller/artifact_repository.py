"""The records of stored artifacts and the projects that sent them, in the controller's database.

The bytes live on disk (artifacts.ArtifactStore, which is given this repository); the database
says which digests exist, so every replica sharing one artifact directory agrees on them, and
which projects may use each one (a project that sent the bytes).
"""
from __future__ import annotations

from typing import Optional

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from .database import Database
from .models import Artifact, ArtifactOwner

# Read for every submission and download: built once (building a statement costs more than running it).
_GET_ARTIFACT = sa.select(Artifact.__table__).where(Artifact.__table__.c.sha256 == sa.bindparam("sha256"))


class ArtifactRepository:
    """Artifact records and owners, in the transactions of the controller's ``Database``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def __repr__(self) -> str:
        return f"ArtifactRepository({self.db!r})"

    def get_artifact(self, sha256: str) -> Optional[Artifact]:
        with self.db.connect() as conn:
            row = conn.execute(_GET_ARTIFACT, {"sha256": sha256}).first()
        return Artifact(**row._mapping) if row is not None else None

    def add_artifact(self, artifact: Artifact) -> bool:
        """Record a stored artifact. False when the digest was already recorded (kept as it was)."""
        try:
            with self.db.write() as s:
                if s.get(Artifact, artifact.sha256) is not None:
                    return False
                s.add(Artifact.model_validate(artifact.model_dump()))
        except IntegrityError:
            # Another replica recorded the same digest between our check and insert.
            return False
        return True

    def add_artifact_owner(self, sha256: str, project: str, *, now: float) -> None:
        """Record that ``project`` sent the bytes of ``sha256`` (and so may use it)."""
        try:
            with self.db.write() as s:
                if s.get(ArtifactOwner, (sha256, project)) is None:
                    s.add(ArtifactOwner(sha256=sha256, project=project, created_at=now))
        except IntegrityError:
            pass  # another replica recorded the same owner at the same time

    def artifact_owned(self, sha256: str, project: str) -> bool:
        with self.db.read() as s:
            return s.get(ArtifactOwner, (sha256, project)) is not None
