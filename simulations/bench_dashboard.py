"""The dashboard on a large run: how much the store grows per reply and how fast each view renders; prints JSON.

    python -m simulations.bench_dashboard [--clients 100] [--rounds 30]

A store is written as a 100-client, 30-round run writes it (every client replying every round: 3,000 train
replies with their update norms, cosine and weight, label counts, epsilon), plus a second run to compare.
Each view (the runs list, the run page with its heatmap, the comparison) is opened in headless Chromium
(Debian's chromium and chromedriver) and timed from navigation until its charts are drawn.
Targets: each view under 2 s; at most 200 bytes of store per reply for what issue 40 added (its four
columns, measured against the same store without them).
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

TARGETS = {"render_seconds": 2.0, "added_bytes_per_reply": 200}


def write_store(path: Path, clients: int, rounds: int, seed: int = 0) -> int:
    """Two runs (slash, then LoRA) as a federation of `clients` writes them; returns the first run's replies."""
    from server.store import RunStore

    rng = np.random.default_rng(seed)
    store = RunStore(path)
    for method, bytes_each in (("slash", 7176), ("lora", 297_992)):
        run = store.start_run("sst2", method, "b", {"alpha": 0.1, "dp-epsilon": 8.0}, None, None, rounds)
        store.set_label_counts(run, {n: [int(x) for x in rng.integers(0, 200, 2)] for n in range(clients)},
                               {n: n for n in range(clients)})
        for rnd in range(rounds + 1):
            store.add_round(run, rnd, {"accuracy": 0.5 + 0.3 * rnd / rounds}, {"train-loss": 1 - rnd / rounds},
                            bytes_up=clients * bytes_each if rnd else 0, accepted=clients if rnd else 0)
            if rnd:
                store.add_replies(run, rnd, "train", [
                    {"node_id": n, "partition_id": n, "status": "accepted", "bytes": bytes_each, "num_examples": 20.0,
                     "metrics": {"train-loss": 0.5, "epsilon": 8.0 * rnd / rounds}, "norm_vector": float(rng.random()),
                     "norm_head": float(rng.random()), "cosine": float(rng.uniform(-1, 1)), "weight": 1 / clients}
                    for n in range(clients)])
        store.end_run(run, "completed")
    store.close()
    return clients * rounds


def added_bytes_per_reply(path: Path, replies: int) -> float:
    """The store's size with issue 40's four reply columns, less its size with them dropped, per reply."""
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "copy.sqlite"
        shutil.copy(path, copy)
        db = sqlite3.connect(copy)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("VACUUM")
        full = copy.stat().st_size
        for column in ("norm_vector", "norm_head", "cosine", "weight"):
            db.execute(f"ALTER TABLE replies DROP COLUMN {column}")
        db.execute("VACUUM")
        db.close()
        return (full - copy.stat().st_size) / (2 * replies)


def render_seconds(store: Path) -> dict:
    """Seconds from navigation until each view has drawn (its data attribute set)."""
    import uvicorn
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from server.dashboard.app import create_app

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1800"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    server = uvicorn.Server(uvicorn.Config(create_app(store), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    views = {"runs": ("/", "return document.querySelectorAll('#runs tbody tr').length === 2"),
             "run": ("/runs/1", "return document.body.dataset.rounds !== undefined"),
             "compare": ("/compare?runs=1,2", "return document.body.dataset.compared === '2'")}
    out = {}
    try:
        for name, (url, ready) in views.items():
            driver.get("about:blank")
            start = time.perf_counter()
            driver.get(f"http://127.0.0.1:{port}{url}")
            while not driver.execute_script(ready):
                if time.perf_counter() - start > 60:
                    raise TimeoutError(f"the {name} view did not draw within 60 s")
                time.sleep(0.01)
            out[name] = round(time.perf_counter() - start, 3)
    finally:
        driver.quit()
        server.should_exit = True
        thread.join(timeout=10)
    return out


def main(argv: list[str] | None = None) -> dict:
    from simulations.bench_options import machine, report

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args(argv)
    if args.clients < 1 or args.rounds < 1:
        parser.error("expected --clients and --rounds of at least 1")
    host = machine()  # before the work: whether other jobs shared the cores
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "big.sqlite"
        replies = write_store(path, args.clients, args.rounds)
        out = {"clients": args.clients, "rounds": args.rounds, "train_replies_per_run": replies, "targets": TARGETS,
               "added_bytes_per_reply": round(added_bytes_per_reply(path, replies), 1),
               "render_seconds": render_seconds(path)}
    out["met"] = {"render": max(out["render_seconds"].values()) < TARGETS["render_seconds"],
                  "storage": out["added_bytes_per_reply"] <= TARGETS["added_bytes_per_reply"]}
    return report(out, host)


if __name__ == "__main__":
    main()
