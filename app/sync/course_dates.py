"""What CourseSales says about course dates and course categories, kept or read once per job."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.coursesales.api import CourseSalesApi
from app.coursesales.schemas import CourseDate
from app.db.models import CourseDateRow
from app.db.tenancy import get_by_key
from app.db.types import utcnow
from app.settings import CoursesSettings
from app.sync.courses import CategoryMapping, map_categories


async def remember_course_date(session: AsyncSession, cd: CourseDate) -> CourseDateRow:
    """Keep what CourseSales said about a course date (webhooks carry only its id); the caller commits."""
    return remembered(session, await get_by_key(session, CourseDateRow, cd.id), cd)


def remembered(session: AsyncSession, row: CourseDateRow | None, cd: CourseDate) -> CourseDateRow:
    """``row`` (None: a new one, added) set to what CourseSales said."""
    if row is None:
        row = CourseDateRow(id=cd.id)
        session.add(row)
    row.category_id, row.category_name = cd.category_id, cd.category_name
    row.start, row.end, row.status_id, row.visibility = cd.start, cd.end, cd.status_id, cd.visibility
    row.fetched_at = utcnow()
    return row


class Catalogue:
    """CourseSales' course categories and their Moodle mapping, read once per job."""

    def __init__(self, coursesales: CourseSalesApi, settings: CoursesSettings) -> None:
        self.coursesales = coursesales
        self.settings = settings
        self._mapping: dict[int, CategoryMapping] | None = None

    async def mapping(self) -> dict[int, CategoryMapping]:
        if self._mapping is None:
            categories, forms = await self.coursesales.course_categories()
            self._mapping = map_categories(categories, forms, self.settings)
        return self._mapping
