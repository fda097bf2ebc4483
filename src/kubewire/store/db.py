"""The cluster's state: every object, persisted in one SQLite file under the state directory.

Any `kubewire` command and the daemon open the same file, so the cluster looks the same from any
shell and survives a restarted daemon. Writes are transactions: a rejected apply changes nothing,
and a daemon killed mid-write leaves either all of a reconcile step or none of it.

Every write transaction takes the next resourceVersion; deletions leave a tombstone with theirs.
So a reader that keeps its parsed objects (the daemon: several snapshots per step) reads only the
rows written since its last snapshot, as an informer follows a watch: at 10k Services re-parsing
every object took 0.27 s per snapshot, a one-endpoint change is one row.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from kubewire.api.validation import apply_defaults
from kubewire.controllers.types import Key, Op, Snapshot, SnapshotCache, key_of

TOMBSTONES_KEPT = 50_000  # revisions of deletions kept for readers that are behind; older: full read
VERIFY_ENV = "KUBEWIRE_VERIFY_SNAPSHOTS"  # tests: compare every cached snapshot with a full read

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
  kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
  rv INTEGER NOT NULL, data TEXT NOT NULL,
  PRIMARY KEY (kind, namespace, name)
);
CREATE INDEX IF NOT EXISTS objects_by_rv ON objects(rv);
CREATE TABLE IF NOT EXISTS deleted (
  kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL, rv INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS deleted_by_rv ON deleted(rv);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runtime (key TEXT PRIMARY KEY, data TEXT NOT NULL);
"""


def now_rfc3339(t: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if t is None else t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Store:
    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self._cache: SnapshotCache | None = None
        self._cache_rv = 0
        self.verify = bool(os.environ.get(VERIFY_ENV))

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ---- reads -------------------------------------------------------------------------------
    def revision(self) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key='rv'").fetchone()
        return int(row[0]) if row else 0

    def data_version(self) -> int:
        """Changes whenever another connection commits: a cheap way to notice writes."""
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    def get(self, kind: str, namespace: str, name: str) -> dict | None:
        row = self.db.execute("SELECT data FROM objects WHERE kind=? AND namespace=? AND name=?",
                              (kind, namespace or "", name)).fetchone()
        return json.loads(row[0]) if row else None

    def list(self, kind: str | None = None, namespace: str | None = None) -> list[dict]:
        q, args = "SELECT data FROM objects", []
        conds = []
        if kind:
            conds.append("kind=?")
            args.append(kind)
        if namespace is not None:
            conds.append("namespace=?")
            args.append(namespace)
        if conds:
            q += " WHERE " + " AND ".join(conds)
        q += " ORDER BY kind, namespace, name"
        return [json.loads(r[0]) for r in self.db.execute(q, args)]

    def snapshot(self) -> Snapshot:
        """All objects. Parsed objects are kept from the previous snapshot and shared with it
        (callers must not modify them): only rows written since are read and parsed."""
        now = time.time()
        self.db.execute("BEGIN")  # one read transaction: the revision and the rows agree
        try:
            rv = self.revision()
            pruned = self.db.execute("SELECT value FROM meta WHERE key='deleted_pruned'").fetchone()
            if self._cache is None or self._cache_rv < (int(pruned[0]) if pruned else 0):
                self._cache = SnapshotCache()
                snap = self._cache.apply(self.list(), (), now)
            else:
                rows = [json.loads(r[0]) for r in self.db.execute("SELECT data FROM objects WHERE rv > ?", (self._cache_rv,))]
                written = {key_of(o) for o in rows}
                gone = [k for k in self.db.execute("SELECT kind, namespace, name FROM deleted WHERE rv > ?",
                                                   (self._cache_rv,)) if k not in written]  # fmt: skip
                snap = self._cache.apply(rows, gone, now)
            self._cache_rv = rv
            if self.verify:
                self._verify(snap)
        finally:
            self.db.execute("COMMIT")
        return snap

    def _verify(self, snap: Snapshot) -> None:
        """The cached objects equal the stored ones: an object of a snapshot modified in place would
        make every later snapshot wrong, so the process stops (SystemExit, not caught by the loop)."""
        stored = {key_of(o): o for o in self.list()}
        if stored != snap.objects:
            bad = sorted(k for k in stored.keys() | snap.objects.keys() if stored.get(k) != snap.objects.get(k))
            print(f"snapshot cache differs from the store at {bad[:5]}: an object of a snapshot was modified",
                  file=sys.stderr, flush=True)
            raise SystemExit(3)

    # ---- writes ------------------------------------------------------------------------------
    def _next_rv(self, db: sqlite3.Connection) -> int:
        rv = self.revision() + 1
        db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('rv', ?)", (str(rv),))
        if rv % 1000 == 0:  # tombstones older than TOMBSTONES_KEPT revisions go
            db.execute("DELETE FROM deleted WHERE rv <= ?", (rv - TOMBSTONES_KEPT,))
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('deleted_pruned', ?)", (str(rv - TOMBSTONES_KEPT),))
        return rv

    def _put(self, db: sqlite3.Connection, obj: dict, rv: int) -> None:
        obj["metadata"]["resourceVersion"] = str(rv)
        k = key_of(obj)
        db.execute("INSERT OR REPLACE INTO objects(kind, namespace, name, rv, data) VALUES(?,?,?,?,?)",
                   (*k, rv, json.dumps(obj, separators=(",", ":"))))

    def _get_in(self, db: sqlite3.Connection, k: Key) -> dict | None:
        row = db.execute("SELECT data FROM objects WHERE kind=? AND namespace=? AND name=?", k).fetchone()
        return json.loads(row[0]) if row else None

    def write(self, ops: Iterable[Op]) -> list[dict]:
        """Apply controller operations in one transaction; returns the objects as written."""
        ops = list(ops)
        if not ops:
            return []
        out = []
        with self.transaction() as db:
            rv = self._next_rv(db)
            for op in ops:
                r = self._apply_op(db, op, rv)
                if r is not None:
                    out.append(r)
        return out

    def _apply_op(self, db: sqlite3.Connection, op: Op, rv: int) -> dict | None:
        obj = op.obj
        meta = obj.setdefault("metadata", {})
        if op.verb == "create":
            if self._get_in(db, key_of(obj)) is not None:
                return None  # level-triggered controllers may race with themselves; first write wins
            # what the API server does to every object it creates, controllers' pods included
            new = apply_defaults(obj, namespace=meta.get("namespace") or "default")
            stamp_new(new)
            self._put(db, new, rv)
            return new
        cur = self._get_in(db, key_of(obj))
        if cur is None:
            return None
        if meta.get("uid") and meta["uid"] != cur["metadata"].get("uid"):
            return None  # a different incarnation of the name: the operation is stale
        if op.verb == "update":
            new = json.loads(json.dumps(obj))
            new["metadata"]["uid"] = cur["metadata"]["uid"]
            new["metadata"]["creationTimestamp"] = cur["metadata"]["creationTimestamp"]
            if "status" in cur and "status" not in new:
                new["status"] = cur["status"]
            if new.get("spec") != cur.get("spec"):
                new["metadata"]["generation"] = int(cur["metadata"].get("generation", 1)) + 1
            else:
                new["metadata"]["generation"] = cur["metadata"].get("generation", 1)
            self._put(db, new, rv)
            return new
        if op.verb == "status":
            cur["status"] = obj.get("status", {})
            self._put(db, cur, rv)
            return cur
        if op.verb == "delete":
            # Pods on a node end gracefully: their kubelet stops them and removes the object.
            if cur["kind"] == "Pod" and cur.get("spec", {}).get("nodeName") and "deletionTimestamp" not in cur["metadata"]:
                cur["metadata"]["deletionTimestamp"] = now_rfc3339()
                cur["metadata"]["deletionGracePeriodSeconds"] = int(cur["spec"].get("terminationGracePeriodSeconds", 30))
                self._put(db, cur, rv)
                return cur
            db.execute("DELETE FROM objects WHERE kind=? AND namespace=? AND name=?", key_of(cur))
            db.execute("INSERT INTO deleted(kind, namespace, name, rv) VALUES(?,?,?,?)", (*key_of(cur), rv))
            return cur
        raise ValueError(op.verb)

    def mark_deleting(self, kind: str, namespace: str, name: str, grace: int | None = None) -> dict | None:
        """Graceful deletion of a pod: the kubelet finishes it and then removes the object."""
        with self.transaction() as db:
            cur = self._get_in(db, (kind, namespace or "", name))
            if cur is None:
                return None
            meta = cur["metadata"]
            if "deletionTimestamp" in meta:
                if grace is not None and grace < int(meta.get("deletionGracePeriodSeconds", 30)):
                    meta["deletionGracePeriodSeconds"] = grace
                    self._put(db, cur, self._next_rv(db))
                return cur
            if grace is None:
                grace = int(cur.get("spec", {}).get("terminationGracePeriodSeconds", 30))
            meta["deletionTimestamp"] = now_rfc3339()
            meta["deletionGracePeriodSeconds"] = grace
            self._put(db, cur, self._next_rv(db))
            return cur

    # ---- runtime records (the agents' own bookkeeping: PIDs, wiring) ---------------------------
    def runtime_get(self, key: str) -> dict | None:
        row = self.db.execute("SELECT data FROM runtime WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def runtime_items(self, prefix: str) -> dict[str, dict]:
        rows = self.db.execute("SELECT key, data FROM runtime WHERE key >= ? AND key < ?", (prefix, prefix + "\uffff"))
        return {k: json.loads(d) for k, d in rows}

    def runtime_put(self, items: dict[str, dict | None]) -> None:
        if not items:
            return
        with self.transaction() as db:
            for k, v in items.items():
                if v is None:
                    db.execute("DELETE FROM runtime WHERE key=?", (k,))
                else:
                    db.execute("INSERT OR REPLACE INTO runtime(key, data) VALUES(?,?)", (k, json.dumps(v)))


def stamp_new(obj: dict) -> None:
    meta = obj["metadata"]
    meta.setdefault("uid", str(uuid.uuid4()))
    meta.setdefault("creationTimestamp", now_rfc3339())
    meta.setdefault("generation", 1)
