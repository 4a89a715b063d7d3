"""Backups of every store with an integrity manifest, verified, and restored all or nothing.

    create_backup(folder, stores)   snapshot SQLite or PostgreSQL, Chroma records, Redis keys
    verify_backup(folder)           checksums, integrity_check / pg_restore, record digests, probe;
                                    a pass is recorded in verified.json
    restore_backup(folder, stores)  verify, then restore into empty stores
    list_backups(root)              the backups in a folder, newest first, verified or not
    prune_backups(root, keep)       remove all but the newest `keep` verified backups

`Stores.from_config(core_config)` names the stores the core itself uses.
"""

from server.backup.catalog import BackupSummary, Pruned, list_backups, prune_backups, unfinished
from server.backup.create import create_backup
from server.backup.errors import BackupError
from server.backup.manifest import MANIFEST_FILE, Manifest, read_manifest
from server.backup.restore import restore_backup
from server.backup.stores import Stores
from server.backup.verify import verify_backup

__all__ = [
    "MANIFEST_FILE",
    "BackupError",
    "BackupSummary",
    "Manifest",
    "Pruned",
    "Stores",
    "create_backup",
    "list_backups",
    "prune_backups",
    "read_manifest",
    "restore_backup",
    "unfinished",
    "verify_backup",
]
