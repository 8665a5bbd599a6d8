"""The client's tests run in Caliber's test session: its stack fixtures are reused here."""

from tests.integration.conftest import isolated_settings, stack_settings

__all__ = ["isolated_settings", "stack_settings"]
