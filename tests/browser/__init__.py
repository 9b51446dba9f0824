"""Browser tests (see conftest.py)."""


def setup_module() -> None:
    """Run once before the folder's first test: without chromium, every test here skips on this one line."""
    from tests.browser.conftest import require_chromium

    require_chromium()
