"""Storage: the database (SQLite by default, or PostgreSQL), its migrations, usage logging, API keys,
conversations, and what replicas share: cooldowns, key counters, admin jobs, login throttling.

Typical startup::

    db = await open_database("sqlite+aiosqlite:///data/minigate.db")  # migrates to the latest schema
    usage = UsageWriter(db)
    await usage.start()
    keys = KeyStore(db)
    ...
    await usage.close()
    await db.close()
"""

from minigate.gateway.storage.conversations import ConversationStore
from minigate.gateway.storage.cooldowns import SharedCooldown, SharedCooldowns
from minigate.gateway.storage.counters import SharedCounters
from minigate.gateway.storage.db import Database, async_url, migrate, open_database, redacted, sync_url
from minigate.gateway.storage.jobs import Job, JobStore
from minigate.gateway.storage.keys import ApiKeyInfo, KeyStore
from minigate.gateway.storage.logins import LoginThrottle
from minigate.gateway.storage.usage import UsageRecord, UsageWriteError, UsageWriter

__all__ = [
    "ApiKeyInfo",
    "ConversationStore",
    "Database",
    "Job",
    "JobStore",
    "KeyStore",
    "LoginThrottle",
    "SharedCooldown",
    "SharedCooldowns",
    "SharedCounters",
    "UsageRecord",
    "UsageWriteError",
    "UsageWriter",
    "async_url",
    "migrate",
    "open_database",
    "redacted",
    "sync_url",
]
