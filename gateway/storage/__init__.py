"""Storage: the database (SQLite by default), its migrations, usage logging and API keys.

Typical startup::

    db = await open_database("sqlite+aiosqlite:///data/minigate.db")  # migrates to the latest schema
    usage = UsageWriter(db)
    await usage.start()
    keys = KeyStore(db)
    ...
    await usage.close()
    await db.close()
"""

from gateway.storage.conversations import ConversationStore
from gateway.storage.db import Database, migrate, open_database, sync_url
from gateway.storage.keys import ApiKeyInfo, KeyStore
from gateway.storage.usage import UsageRecord, UsageWriteError, UsageWriter

__all__ = [
    "ApiKeyInfo",
    "ConversationStore",
    "Database",
    "KeyStore",
    "UsageRecord",
    "UsageWriteError",
    "UsageWriter",
    "migrate",
    "open_database",
    "sync_url",
]
