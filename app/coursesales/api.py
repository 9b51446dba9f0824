"""CourseSalesApi: what the sync rules and checks ask of CourseSales, typed, so they need not take ``Any``.

CourseSalesClient (app/coursesales/client.py) fits it structurally; so does any stand-in with the same calls. Every
call raises only the CourseSales error tree (app/coursesales/errors.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from app.coursesales.schemas import CourseCategory, CourseDate, FormField


class CourseSalesApi(Protocol):
    """The CourseSalesClient calls used outside the client, with its exact signatures."""

    @property
    def url(self) -> str:
        """The account's base URL, for messages (never carries the login)."""
        ...

    async def check_login(self) -> int:
        """A cheap read proving the login works; how many course categories the answer held."""
        ...

    async def course_categories(
        self, *, page_size: int | None = None
    ) -> tuple[list[CourseCategory], dict[int, dict[int, FormField]]]:
        """Every course category with its form content, and the forms: {form id: {field id: FormField}}."""
        ...

    # Not async here: an async generator function is a plain function returning an async iterator.
    def iter_course_dates(self, *, page_size: int | None = None) -> AsyncIterator[CourseDate]:
        """Every course date of the Moodle listing, streamed page by page."""
        ...

    async def execute_step(self, *, document_external_id: str, step_id: int) -> dict[str, Any]:
        """Execute a process step on a Document; its outcome cannot be read back."""
        ...

    async def post_registration(
        self, *, form_id: int, process_path_id: int, process_step_id: int, fields: Mapping[int, str]
    ) -> dict[str, Any]:
        """Create a registration Document."""
        ...

    def registration_document_id(self, answer: Mapping[str, Any]) -> str | None:
        """Where the answer to ``post_registration`` names the new Document."""
        ...
