"""Helpers for testing tbcoap and its plugins (need pytest and pytest-twisted)."""
