"""Disclosure policy: what each site allows, combined so that the strictest site wins.

``model`` holds the policy file format, its digest, the checks and ``combine``;
``ratelimit`` the per-analyst sliding-hour limiter.
"""

from site_agent.policy.model import Policy, TablePolicy, combine, load_policy, render_policy_template
from site_agent.policy.ratelimit import RateLimiter

__all__ = ["Policy", "RateLimiter", "TablePolicy", "combine", "load_policy", "render_policy_template"]
