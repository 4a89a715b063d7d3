"""Fair use: request rate per key, open streams per tenant, daily tokens per tenant.

In memory by default (one core); with SCRIPTGEN_REDIS_URL in Redis, decided by
Lua scripts, so limits hold across every replica. See server.auth.settings for
the defaults and server.ratelimit.budget for what a budget that runs out does.
"""

from server.ratelimit.base import Decision, Limiter
from server.ratelimit.budget import TokenBudget, estimate_tokens
from server.ratelimit.memory import MemoryLimiter
from server.ratelimit.redis import RedisLimiter

__all__ = [
    "Decision",
    "Limiter",
    "MemoryLimiter",
    "RedisLimiter",
    "TokenBudget",
    "estimate_tokens",
]
