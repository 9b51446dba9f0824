"""How a console form changes something: the same endpoint function as /api, in a unit of work of the signed-in
operator (their name in the audit trail), its refusal turned into the message the page shows."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import HTTPException
from pydantic import ValidationError
from starlette.responses import Response

from app.api.unit_of_work import UnitOfWork
from app.console.auth import Signed
from app.console.render import done
from app.runtime import Runtime
from app.sync.operations import OperationError

T = TypeVar("T")


class Failed(Exception):
    """The action was refused; nothing of it was stored."""


def reason(exc: Exception) -> str:
    """One line a person can act on, from whatever refused the action."""
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ()))
        return f"{field}: {first.get('msg', 'not valid')}" if field else str(first.get("msg", "not valid"))
    if isinstance(exc, HTTPException):
        return str(exc.detail)
    return str(exc)


async def act(rt: Runtime, user: Signed, action: Callable[[UnitOfWork], Awaitable[T]]) -> T:
    """Run ``action`` in a unit of work of this operator: committed and queued when it returns, nothing kept when
    it raises (``Failed`` with the reason)."""
    async with rt.sessions() as session:
        uow = UnitOfWork(session, rt.queue, actor=user.name)
        try:
            result = await action(uow)
        except (OperationError, HTTPException, ValidationError) as exc:
            await session.rollback()
            raise Failed(reason(exc)) from exc
        await uow.complete()
        return result


async def perform(
    rt: Runtime,
    user: Signed,
    action: Callable[[UnitOfWork], Awaitable[Any]],
    *,
    back: str,
    said: str | Callable[[Any], str],
    refused: str,
) -> Response:
    """A form's whole answer: do ``action``, then back to ``back`` saying what was done, or why it was refused."""
    try:
        result = await act(rt, user, action)
    except Failed as exc:
        return done(back, f"{refused}: {exc}", ok=False)
    return done(back, said(result) if callable(said) else said)
