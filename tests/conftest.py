"""Shared test configuration."""

from hypothesis import settings

settings.register_profile("default", max_examples=30, deadline=None, derandomize=True)
settings.load_profile("default")
