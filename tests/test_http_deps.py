"""The HTTP clients' dependencies that cost time when missing."""

from __future__ import annotations

import sys


async def test_sniffio_is_installed_so_httpcore_does_not_search_for_it_on_every_request() -> None:
    from httpcore._synchronization import current_async_library

    assert current_async_library() == "asyncio"
    assert "sniffio" in sys.modules
