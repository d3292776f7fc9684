"""The durable delta log: SQLite in WAL mode with ``synchronous=FULL``.

Every delta a replica accepts (its own writes and remote ones) is a row; a local write
returns only after its row is committed, and in WAL mode with FULL sync a commit is
fsynced, so a kill -9 (or power loss) right after ``set()`` returns loses nothing.
Opening a store replays the rows (merge is order-free, so replay order does not matter).
"""

from __future__ import annotations

import fcntl
import sqlite3
import threading

from ..errors import IoError


class DeltaLog:
    def __init__(self, path: str) -> None:
        # One Store per database: two writers sharing a log (and so a writer id) would
        # spend the same seqs twice. An exclusive lock on a side file says so at open.
        try:
            self._lock_file = open(path + ".lock", "a")
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise IoError(f"{path} is open in another Store (this process or another): one Store per database") from None
        except OSError as e:
            raise IoError(f"cannot open the CRDT store database {path}: {e}") from None
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS deltas (store TEXT NOT NULL, writer TEXT NOT NULL, "
                "seq INTEGER NOT NULL, raw BLOB NOT NULL, PRIMARY KEY (store, writer, seq))"
            )
            self._db.execute("CREATE TABLE IF NOT EXISTS writers (store TEXT NOT NULL, peer TEXT NOT NULL, "
                             "incarnation TEXT NOT NULL, PRIMARY KEY (store, peer))")
        except sqlite3.Error as e:
            self._lock_file.close()
            raise IoError(f"cannot open the CRDT store database {path}: {e}") from None
        if mode.lower() != "wal":
            self._lock_file.close()
            raise IoError(f"{path}: SQLite refused WAL mode (got {mode}); use a local file system")
        self._lock = threading.Lock()

    def incarnation(self, store: str, peer: str, fresh: str) -> str:
        """This peer's incarnation for ``store`` in this log: the one recorded, else
        ``fresh`` (recorded now)."""
        with self._lock:
            row = self._db.execute("SELECT incarnation FROM writers WHERE store = ? AND peer = ?", (store, peer)).fetchone()
            if row is not None:
                return row[0]
            self._commit("INSERT INTO writers (store, peer, incarnation) VALUES (?, ?, ?)", [(store, peer, fresh)])
            return fresh

    def renew_incarnation(self, store: str, peer: str, fresh: str) -> str:
        """Records ``fresh`` as this peer's incarnation for ``store`` (a new writer with
        a new sequence) and returns it."""
        with self._lock:
            self._commit("INSERT OR REPLACE INTO writers (store, peer, incarnation) VALUES (?, ?, ?)", [(store, peer, fresh)])
        return fresh

    def append(self, store: str, rows: list[tuple[str, int, bytes]]) -> None:
        """Commits (writer, seq, raw) rows; already present rows are ignored."""
        with self._lock:
            self._commit("INSERT OR IGNORE INTO deltas (store, writer, seq, raw) VALUES (?, ?, ?, ?)",
                         [(store, w, s, r) for w, s, r in rows])

    def _commit(self, sql: str, rows: list[tuple]) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(sql, rows)
            self._db.execute("COMMIT")
        except BaseException as e:  # whatever failed, never leave the transaction open
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            if isinstance(e, (sqlite3.Error, OverflowError)):
                raise IoError(f"cannot write the CRDT store database: {e}") from None
            raise

    def load(self, store: str) -> list[bytes]:
        with self._lock:
            return [row[0] for row in self._db.execute("SELECT raw FROM deltas WHERE store = ?", (store,))]

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._lock_file.close()  # releases the flock
