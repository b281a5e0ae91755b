"""The run store: one SQLite file with a row per run, per round and per client reply.

WAL mode lets a dashboard read while the server writes. Every write is its own transaction,
so a crash loses at most the round in flight, never what was stored before.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from pathlib import Path

from fedrp.files import atomic_path, check_writable_folder

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task TEXT, method TEXT, backbone TEXT, config TEXT, spec TEXT, fingerprint TEXT,
    num_rounds INTEGER, resumed_from TEXT, started REAL, ended REAL,
    status TEXT, error TEXT, pid INTEGER, host TEXT
);
CREATE TABLE IF NOT EXISTS rounds (
    run_id INTEGER REFERENCES runs(id), round INTEGER,
    server_metrics TEXT, train_metrics TEXT, eval_metrics TEXT,
    bytes_up INTEGER, bytes_down INTEGER, accepted INTEGER, refused INTEGER,
    wall_seconds REAL, ended REAL,
    PRIMARY KEY (run_id, round)
);
CREATE TABLE IF NOT EXISTS replies (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER REFERENCES runs(id), round INTEGER, kind TEXT,
    node_id TEXT, partition_id INTEGER, num_examples REAL, bytes INTEGER,  -- node ids are uint64
    status TEXT, reason TEXT, detail TEXT, metrics TEXT,
    norm_vector REAL, norm_head REAL, cosine REAL, weight REAL  -- the update (payload.update_stats), its weight
);
CREATE INDEX IF NOT EXISTS replies_by_round ON replies (run_id, round);
CREATE TABLE IF NOT EXISTS label_counts (  -- what each client reported of its training labels (eval-prior)
    run_id INTEGER REFERENCES runs(id), node_id TEXT, partition_id INTEGER, counts TEXT,
    PRIMARY KEY (run_id, node_id)
);
"""
STORE_MARK = "fedrp-run-store"


SQLITE_HEADER = b"SQLite format 3\0"


def foreign_reason(path: Path) -> str | None:
    """Why an existing file is not a fedrp run store, found without writing a byte; None if it is one or is empty.

    A WAL database without its -wal file is read as immutable: a plain read-only connection
    would create -wal and -shm files beside another application's database.
    """
    if not path.exists() or path.stat().st_size == 0:
        return None
    with path.open("rb") as f:
        header = f.read(100)
    if not header.startswith(SQLITE_HEADER):
        return "is not an SQLite file"
    wal_without_log = len(header) > 18 and header[18] == 2 and not Path(f"{path}-wal").exists()
    db = sqlite3.connect(f"{path.resolve().as_uri()}?{'immutable=1' if wal_without_log else 'mode=ro'}", uri=True)
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        mark = db.execute("SELECT value FROM meta WHERE key='format'").fetchone() if "meta" in tables else None
    except sqlite3.DatabaseError as err:
        return f"is not a readable SQLite database ({err})"
    finally:
        db.close()
    return None if mark is not None and mark[0] == STORE_MARK else f"has no '{STORE_MARK}' mark"


def create(path: Path) -> None:
    """A new store, in WAL mode, whose file appears already marked, so a reader never finds fedrp's file
    without its mark; when another process creates it first, theirs is kept."""
    try:
        with atomic_path(path, mode=0o644, replace=path.exists()) as tmp:  # an empty file holds nothing to keep
            db = sqlite3.connect(tmp, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
                db.execute("INSERT INTO meta VALUES ('format', ?)", (STORE_MARK,))
                db.executescript(SCHEMA)
            finally:
                db.close()
    except FileExistsError:
        pass


def check_store(path: Path) -> None:
    """Refuse, without writing a byte, a store path fedrp must not or cannot write: a folder, another
    application's file, a file made read-only, a folder where SQLite cannot make its -wal and -shm files."""
    if path.is_dir():
        raise ValueError(f"store {path} is a folder: expected an SQLite file path")
    reason = foreign_reason(path)
    if reason:
        raise ValueError(f"{path} is not a fedrp run store: it {reason}; fedrp writes only stores it created, "
                         "so name another store")
    # The mode bits too: root may write any file, but a store its owner made read-only is kept as it is.
    if path.exists() and not (os.access(path, os.W_OK) and path.stat().st_mode & 0o222):
        raise ValueError(f"store {path} is read-only: expected a store fedrp may write (chmod u+w it, or name "
                         f"another store)")
    check_writable_folder(path.parent, "store", "the run store and its -wal and -shm files")


class RunStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        check_store(self.path)
        if not self.path.exists() or self.path.stat().st_size == 0:
            create(self.path)
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)  # stores of older versions gain the tables added since
        columns = {r[1] for r in self.db.execute("PRAGMA table_info(runs)")}
        for column, kind in (("pid", "INTEGER"), ("host", "TEXT")):  # stores written before these columns
            if column not in columns:
                self.db.execute(f"ALTER TABLE runs ADD COLUMN {column} {kind}")
        columns = {r[1] for r in self.db.execute("PRAGMA table_info(replies)")}
        for column in ("norm_vector", "norm_head", "cosine", "weight"):
            if column not in columns:
                self.db.execute(f"ALTER TABLE replies ADD COLUMN {column} REAL")

    @classmethod
    def open_readonly(cls, path: str | Path) -> RunStore:
        """A reader beside a writing server (the dashboard): it never creates, marks or changes the file."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"no run store at {p}: expected the SQLite file a fedrp server writes "
                                    f"(its `store` key)")
        store = cls.__new__(cls)
        store.path = p
        store.db = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True, timeout=30, check_same_thread=False)
        try:
            mark = store.db.execute("SELECT value FROM meta WHERE key='format'").fetchone()
        except sqlite3.DatabaseError:
            mark = None
        if mark is None or mark[0] != STORE_MARK:
            store.db.close()
            raise ValueError(f"{p} is not a fedrp run store (no '{STORE_MARK}' mark); "
                             f"point at a store a fedrp server wrote")
        return store

    def start_run(self, task: str, method: str, backbone: str, config: dict, spec: str | None,
                  fingerprint: str | None, num_rounds: int, resumed_from: str | None = None) -> int:
        cur = self.db.execute(
            "INSERT INTO runs (task, method, backbone, config, spec, fingerprint, num_rounds, resumed_from,"
            " started, status, pid, host) VALUES (?,?,?,?,?,?,?,?,?, 'running', ?, ?)",
            (task, method, backbone, json.dumps(config, sort_keys=True), spec, fingerprint, num_rounds,
             resumed_from, time.time(), os.getpid(), socket.gethostname()),
        )
        return int(cur.lastrowid)

    def mark_orphans(self) -> list[int]:
        """Mark interrupted the runs still 'running' whose server process on this host is gone; their ids."""
        rows = self.db.execute("SELECT id, pid FROM runs WHERE status='running' AND host=? AND pid IS NOT NULL",
                               (socket.gethostname(),)).fetchall()
        gone = [run_id for run_id, pid in rows if not _alive(pid)]
        for run_id in gone:
            self.db.execute("UPDATE runs SET status='interrupted', error=? WHERE id=? AND status='running'",
                            (f"its server process {dict(rows)[run_id]} ended without finishing the run (killed?)",
                             run_id))
        return gone

    def end_run(self, run_id: int, status: str, error: str | None = None) -> None:
        self.db.execute("UPDATE runs SET ended=?, status=?, error=? WHERE id=?", (time.time(), status, error, run_id))

    def add_round(self, run_id: int, rnd: int, server_metrics: dict, train_metrics: dict | None = None,
                  eval_metrics: dict | None = None, bytes_up: int = 0, bytes_down: int = 0, accepted: int = 0,
                  refused: int = 0, wall_seconds: float = 0.0) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO rounds VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (run_id, rnd, json.dumps(server_metrics), json.dumps(train_metrics or {}), json.dumps(eval_metrics or {}),
             bytes_up, bytes_down, accepted, refused, wall_seconds, time.time()),
        )

    def add_replies(self, run_id: int, rnd: int, kind: str, records: list[dict]) -> None:
        rows = [(run_id, rnd, kind, str(r.get("node_id")), r.get("partition_id"), r.get("num_examples"), r.get("bytes", 0),
                 r["status"], r.get("reason"), r.get("detail"), json.dumps(r.get("metrics") or {}),
                 r.get("norm_vector"), r.get("norm_head"), r.get("cosine"), r.get("weight")) for r in records]
        with self.db:
            self.db.executemany(
                "INSERT INTO replies (run_id, round, kind, node_id, partition_id, num_examples, bytes, status, reason,"
                " detail, metrics, norm_vector, norm_head, cosine, weight) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                rows)

    def set_label_counts(self, run_id: int, counts: dict[int, list[int]], partitions: dict[int, int | None]) -> None:
        """The label counts the clients reported so far (node id -> counts), kept with their partition ids."""
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO label_counts VALUES (?,?,?,?)",
                                [(run_id, str(node), partitions.get(node), json.dumps(c)) for node, c in counts.items()])

    def label_counts(self, run_id: int) -> list[dict]:
        try:
            cur = self.db.execute("SELECT node_id, partition_id, counts FROM label_counts WHERE run_id=? "
                                  "ORDER BY partition_id, node_id", (run_id,))
        except sqlite3.OperationalError:  # a store from before the table, opened read-only: none recorded
            return []
        return [{"node_id": n, "partition_id": p, "counts": json.loads(c)} for n, p, c in cur]

    # Reading, for summaries, tests and the dashboard.
    def runs(self) -> list[dict]:
        cur = self.db.execute("SELECT * FROM runs ORDER BY id DESC")
        return [dict(zip([c[0] for c in cur.description], row)) for row in cur.fetchall()]

    def run(self, run_id: int) -> dict:
        cur = self.db.execute("SELECT * FROM runs WHERE id=?", (run_id,))
        row = cur.fetchone()
        if row is None:
            raise ValueError(f"no run {run_id} in {self.path}")
        return dict(zip([c[0] for c in cur.description], row))

    def rounds(self, run_id: int) -> list[dict]:
        cur = self.db.execute("SELECT * FROM rounds WHERE run_id=? ORDER BY round", (run_id,))
        cols = [c[0] for c in cur.description]
        out = []
        for row in cur.fetchall():
            r = dict(zip(cols, row))
            for k in ("server_metrics", "train_metrics", "eval_metrics"):
                r[k] = json.loads(r[k])
            out.append(r)
        return out

    def replies(self, run_id: int, status: str | None = None) -> list[dict]:
        query = "SELECT * FROM replies WHERE run_id=?" + (" AND status=?" if status else "") + " ORDER BY id"
        cur = self.db.execute(query, (run_id, status) if status else (run_id,))
        cols = [c[0] for c in cur.description]
        return [{**dict(zip(cols, row)), "metrics": json.loads(row[cols.index("metrics")])} for row in cur.fetchall()]

    def close(self) -> None:
        self.db.close()


def _alive(pid: int) -> bool:
    """Whether a process with this id exists here (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
