"""Shared test configuration."""

from hypothesis import settings

from site_agent.tuning import tune_allocator

tune_allocator()

settings.register_profile("default", max_examples=30, deadline=None, derandomize=True)
settings.load_profile("default")
