"""Projects: the organising unit of runs, caches and (later) secrets and permissions."""

from __future__ import annotations

from sqlalchemy import select

from .. import wire
from ._db import Database
from ._errors import ConflictError, NotFoundError
from ._models import Project, utcnow


def project_info(row: Project) -> wire.ProjectInfo:
    return wire.ProjectInfo(
        name=row.name,
        description=row.description,
        domains=list(wire.DOMAINS),
        created_at=row.created_at,
    )


class ProjectService:
    """Creates and lists projects; every project has the domains in ``wire.DOMAINS``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def ensure_default(self) -> None:
        """Create the ``default`` project if a migration did not (or it was removed)."""
        with self._db.write() as s:
            if s.scalar(select(Project.id).where(Project.name == "default")) is None:
                s.add(
                    Project(name="default", description="The default project.", created_at=utcnow())
                )

    def create(self, spec: wire.ProjectCreate) -> wire.ProjectInfo:
        with self._db.write() as s:
            if s.scalar(select(Project.id).where(Project.name == spec.name)) is not None:
                raise ConflictError(f"project {spec.name!r} already exists")
            row = Project(name=spec.name, description=spec.description, created_at=utcnow())
            s.add(row)
        return project_info(row)

    def list(self) -> list[wire.ProjectInfo]:
        with self._db.read() as s:
            return [project_info(r) for r in s.scalars(select(Project).order_by(Project.name))]

    def get(self, name: str) -> wire.ProjectInfo:
        with self._db.read() as s:
            row = s.scalar(select(Project).where(Project.name == name))
            if row is None:
                raise NotFoundError(f"project {name!r} not found")
            return project_info(row)
