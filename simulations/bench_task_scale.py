"""A user's task file of 10k, 100k and 1M rows: time to the first training step and peak memory; prints JSON.

    python -m simulations.bench_task_scale [--rows 10000 100000 1000000] [--scratch DIR] [--validation-rows 1000] \
        [--model NAME] [--batch-size 32] [--max-length 128] [--bf16 auto] [--device auto]

For each size it writes a synthetic CSV task into the scratch folder (a text column of short random
sentences over a small vocabulary, a label column of 4 string labels, a small validation file and
task.toml), then runs the real `fedrp train --task <task.toml> --method slash` twice, each run a fresh
process whose caches ($FEDRP_CACHE, $HF_DATASETS_CACHE) are the size's own folders under the scratch
folder, never the user's:
- cold: nothing cached: datasets parses the CSV, fedrp checks and maps its labels, tokenizes, caches;
- warm: the same command again, on the now-cached files.
A run ends at its first optimizer step: a global step hook (torch.optim's register_optimizer_step_post_hook),
installed before `fedrp.cli.main` runs, records the moment and the process's memory and exits. So the time is
"time to the first step" of the command itself, interpreter start and imports included (from the moment this
script starts the process), and the phases (reading the files, hashing them for the cache key, tokenizing,
loading the backbone, building the model, the first step) are timed by wrapping fedrp's own functions, not by
reproducing them. The process's CPU seconds (user and system, from os.wait4) go beside its wall time: on a
shared core they are the nearer figure to an idle machine's wall time. Memory: the process's peak RSS (VmHWM,
the kernel's high-water mark, which counts file pages of memory-mapped Arrow tables as well as the heap; also
ru_maxrss as os.wait4 reports it for that process alone) and the peak of its anonymous RSS (RssAnon, sampled
every 20 ms by a thread in the process: heap, Python objects, tensors; what a Python list over a whole column
would show up in).

At the smallest size it then checks that the tokenized cache follows the file's content: row 0 of the
training file is rewritten with the same bytes in another order and another label of the same length;
run once as an editor leaves it (new mtime) and once with its size and mtime put back (as a copy that keeps
timestamps can leave a file, or two writes within a file system's mtime granularity). Each run must tokenize
again and train on the edited row.

Targets (the issue's): peak RSS grows by at most 200 MB from the smallest to the largest size, cold and
warm; on a cached file the time to the first step is under 5 s at every size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path

from simulations.bench_options import machine, report

ROWS = (10_000, 100_000, 1_000_000)
RSS_GROWTH_LIMIT_MB = 200.0
WARM_SECONDS_LIMIT = 5.0
MB = 2**20
LABELS = ("greet", "leave", "query", "thank")  # all of one length: an edited row keeps the file's size
VOCAB = (  # short words of requests to a service: the sentences' vocabulary
    "the", "a", "an", "this", "that", "my", "your", "our", "their", "one", "two", "some", "any", "every", "no",
    "more", "most", "good", "bad", "new", "old", "big", "small", "long", "short", "fast", "slow", "early", "late",
    "happy", "sad", "open", "close", "start", "stop", "order", "book", "flight", "hotel", "room", "table", "ticket",
    "train", "bus", "car", "taxi", "card", "bill", "price", "refund", "delivery", "package", "parcel", "account",
    "password", "email", "phone", "address", "name", "time", "day", "week", "month", "today", "tomorrow", "morning",
    "evening", "please", "thanks", "hello", "hi", "bye", "goodbye", "help", "need", "want", "like", "love", "hate",
    "check", "change", "cancel", "send", "get", "find", "show", "tell", "ask", "call", "pay", "buy", "sell", "move",
    "keep", "give", "take", "make", "wait", "again", "now", "here", "there", "where", "when", "why", "how", "what",
    "which", "who", "can", "could", "would", "should", "will", "do", "does", "did", "is", "are", "was", "were", "be",
    "been", "not", "very", "too", "really", "just", "only", "also", "still",
)
FIRST, EDITED, EDITED_AGAIN = ("apple river stone", "greet"), ("stone river apple", "thank"), ("river apple stone", "leave")
CHILD = "_first_step"  # argv[1] of the process this script starts for one measurement


# ---- the data --------------------------------------------------------------------------------

def write_csv(path: Path, rows: int, seed: int, first: tuple[str, str] | None = None) -> None:
    """rows sentences of 3 to 14 words from VOCAB with one of LABELS each, written in blocks (no list of
    the whole file in memory); row 0 is `first` when given."""
    import numpy as np

    rng = np.random.default_rng(seed)
    words = np.array(VOCAB)
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write("utterance,intent\n")
        done = 0
        while done < rows:
            n = min(100_000, rows - done)
            lengths = rng.integers(3, 15, n)
            picks = words[rng.integers(0, len(words), (n, 14))]
            labels = rng.integers(0, len(LABELS), n)
            lines = [f"{' '.join(picks[i, :lengths[i]])},{LABELS[labels[i]]}\n" for i in range(n)]
            if done == 0 and first is not None:
                lines[0] = f"{first[0]},{first[1]}\n"
            f.writelines(lines)
            done += n


def write_task(folder: Path, rows: int, validation_rows: int, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_csv(folder / "train.csv", rows, seed, first=FIRST)
    write_csv(folder / "dev.csv", validation_rows, seed + 1)
    labels = ", ".join(f'"{name}"' for name in LABELS)
    (folder / "task.toml").write_text(f'name = "intents"\ntrain = "train.csv"\nvalidation = "dev.csv"\n'
                                      f'text = "utterance"\nlabel = "intent"\nlabels = [{labels}]\n', encoding="utf-8")
    return folder / "task.toml"


def edit_first_row(path: Path, row: tuple[str, str], keep_mtime: bool) -> None:
    """Row 0 of a training file rewritten in place with the same number of bytes; with keep_mtime its
    modification time is put back, so only the content tells the files apart."""
    before = path.stat()
    with path.open("r+b") as f:
        f.readline()  # the header
        at = f.tell()
        old = f.readline()
        new = f"{row[0]},{row[1]}\n".encode()
        if len(new) != len(old):
            raise ValueError(f"an edited row must keep its length: {old!r} -> {new!r}")
        f.seek(at)
        f.write(new)
    if keep_mtime:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def cache_sizes(work: Path) -> dict[str, int]:
    """Bytes on disk of a size's caches: fedrp's (tokenized splits, projections) and datasets' (parsed files,
    map results)."""
    return {"fedrp": folder_bytes(work / "fedrp-cache"), "fedrp_tokens": folder_bytes(work / "fedrp-cache" / "tokens"),
            "hf_datasets": folder_bytes(work / "hf-datasets")}


# ---- one measurement: a fresh `fedrp train` process up to its first step ----------------------

def measure(task: Path, work: Path, args: argparse.Namespace, label: str) -> dict:
    """One `fedrp train` process, started here, stopped by its own first optimizer step."""
    result_file = work / f"{label}.json"
    log_file = work / f"{label}.log"
    result_file.unlink(missing_ok=True)
    before = cache_sizes(work)
    env = {**os.environ, "FEDRP_CACHE": str(work / "fedrp-cache"), "HF_DATASETS_CACHE": str(work / "hf-datasets")}
    train = ["train", "--json", f"--task={task}", "--method=slash", f"--batch-size={args.batch_size}",
             f"--max-length={args.max_length}", f"--bf16={args.bf16}", f"--device={args.device}",
             f"--out={work / 'out'}", "--overwrite", *([f"--model={args.model}"] if args.model else [])]
    cmd = [sys.executable, "-m", "simulations.bench_task_scale", CHILD, str(result_file), "--", *train]
    print(f"  {label}: fedrp {' '.join(train)}", file=sys.stderr, flush=True)
    with log_file.open("w") as log:
        start = time.time()
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[1])
        while True:  # os.wait4 rather than proc.wait: it also returns this process's own resource usage
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.time() - start > args.timeout:
                proc.kill()  # the next wait4 reaps it
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 or not result_file.is_file():
        tail = log_file.read_text(errors="replace").splitlines()[-20:]
        why = f"ran past --timeout {args.timeout:g} s" if time.time() - start > args.timeout else \
            f"exited with status {proc.returncode}"
        raise RuntimeError(f"{label}: the run {why} before its first step:\n"
                           + "\n".join(tail))
    out = json.loads(result_file.read_text())
    out["seconds_to_first_step"] = round(out.pop("first_step_at") - start, 3)  # from this script's start of it
    out["seconds_before_main"] = round(out.pop("entered_at") - start, 3)  # interpreter start, before any import
    out["ru_maxrss_mb"] = round(usage.ru_maxrss * 1024 / MB, 1)  # os.wait4: this process's own, in KiB on Linux
    # CPU time of the process (all its threads): on a shared core the wall time above waits for the other jobs,
    # this does not (much), so it is the nearer of the two to what an idle machine would take
    out["cpu_seconds"] = {"user": round(usage.ru_utime, 2), "system": round(usage.ru_stime, 2)}
    out["cache_bytes"] = cache_sizes(work)
    out["cache_bytes_written"] = {k: out["cache_bytes"][k] - before[k] for k in before}  # by this run
    out["token_caches"] = sorted(p.name for p in (work / "fedrp-cache" / "tokens").glob("*"))
    print(f"  {label}: first step after {out['seconds_to_first_step']:.1f} s ({sum(out['cpu_seconds'].values()):.1f} s "
          f"of CPU), peak RSS {out['peak_rss_mb']:.0f} MB "
          f"(anonymous {out['peak_rss_anon_mb']:.0f} MB), tokenized: {out['tokenized']}", file=sys.stderr, flush=True)
    return out


def _status() -> dict[str, int]:
    """This process's memory lines of /proc/self/status, in bytes."""
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
                values[key] = int(rest.split()[0]) * 1024
    return values


class _Sampler(threading.Thread):
    """The peak of this process's anonymous and file-backed RSS, read every `interval` seconds."""

    def __init__(self, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0}
        self.samples = 0

    def sample(self) -> dict[str, int]:
        now = _status()
        for key in self.peak:
            self.peak[key] = max(self.peak[key], now.get(key, 0))
        self.samples += 1
        return now

    def run(self) -> None:
        while True:
            self.sample()
            time.sleep(self.interval)


def first_step(result_file: str, fedrp_argv: list[str]) -> None:
    """In the measured process: time fedrp's own steps, run `fedrp train`, stop at the first optimizer step."""
    entered = time.time()
    sampler = _Sampler()
    sampler.start()
    events: list[dict] = []
    open_events: list[dict] = []  # the wrapped calls under way, outermost first
    calls = {"tokenize": 0}

    def timed(module, name: str, phase: str, describe=None):
        original = getattr(module, name)

        def wrapper(*a, **kw):
            event = {"phase": phase, **(describe(*a, **kw) if describe else {}), "depth": len(open_events),
                     "start": round(time.time() - entered, 3)}
            events.append(event)
            open_events.append(event)
            t = time.perf_counter()
            try:
                return original(*a, **kw)
            finally:
                open_events.pop()
                _close(event, time.perf_counter() - t)
        setattr(module, name, wrapper)

    def _close(event: dict, seconds: float) -> None:
        now = sampler.sample()
        event.update(seconds=round(seconds, 3), rss_after_mb={"anon": round(now["RssAnon"] / MB, 1),
                                                              "file": round(now["RssFile"] / MB, 1)},
                     peak_rss_so_far_mb=round(now["VmHWM"] / MB, 1))

    t = time.perf_counter()
    import torch

    import fedrp.centralized
    import fedrp.cli
    import fedrp.data
    import fedrp.glue
    import fedrp.tasks
    imports = round(time.perf_counter() - t, 3)
    trained: dict = {}

    def split_of(task, split="train", *a, **kw) -> dict:
        return {"split": split}

    def counted(*a, **kw) -> dict:
        calls["tokenize"] += 1
        return {}

    timed(fedrp.glue, "load_split", "read split (datasets, label check)", split_of)
    timed(fedrp.tasks, "content_id", "hash the files (cache key)", split_of)
    timed(fedrp.data, "load_tokenized", "load_tokenized", split_of)
    timed(fedrp.data, "tokenize", "tokenize", counted)
    timed(fedrp.centralized, "load_backbone", "load backbone")
    timed(fedrp.centralized, "build", "build model")
    timed(fedrp.centralized, "train", "train until the first step")
    original_load_tokenized = fedrp.data.load_tokenized

    def capture(task, split, *a, **kw):  # the training set, to read back its size and first row
        ds = original_load_tokenized(task, split, *a, **kw)
        if split == "train":
            trained["ds"], trained["tokenizer"] = ds, a[0] if a else kw["tokenizer"]
        return ds
    fedrp.data.load_tokenized = capture

    def stop(optimizer, *_):
        at = time.time()
        for event in open_events:  # the calls this step ends inside of (training)
            _close(event, at - entered - event["start"])
        now = sampler.sample()
        top = [e for e in events if e["depth"] == 0]
        by_phase = {"imports": imports}
        for e in top:
            by_phase[e["phase"]] = round(by_phase.get(e["phase"], 0.0) + e["seconds"], 3)
        by_phase["other"] = round(at - entered - sum(by_phase.values()), 3)
        ds, tokenizer = trained.get("ds"), trained.get("tokenizer")
        row = ds[0] if ds is not None else None
        out = {
            "entered_at": entered, "first_step_at": at, "imports_seconds": imports,
            "seconds_by_phase": by_phase, "phases": events,
            "tokenized": calls["tokenize"] > 0, "tokenize_calls": calls["tokenize"],
            "train_rows": len(ds) if ds is not None else None,
            "first_row": None if row is None else {
                "text": tokenizer.decode(row["input_ids"], skip_special_tokens=True), "label": int(row["label"])},
            "peak_rss_mb": round(now["VmHWM"] / MB, 1),
            "peak_rss_anon_mb": round(sampler.peak["RssAnon"] / MB, 1),
            "peak_rss_file_mb": round(sampler.peak["RssFile"] / MB, 1),
            "rss_at_first_step_mb": {k: round(v / MB, 1) for k, v in now.items() if k != "VmHWM"},
            "memory_samples": sampler.samples,
            "torch_threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        }
        Path(result_file).write_text(json.dumps(out))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # the first step is what is measured: no more training, no evaluation, no artifact

    from torch.optim.optimizer import register_optimizer_step_post_hook

    register_optimizer_step_post_hook(stop)
    status = fedrp.cli.main(fedrp_argv)
    print(f"fedrp train ended (status {status}) without an optimizer step", file=sys.stderr)
    sys.exit(status or 1)


# ---- the benchmark ---------------------------------------------------------------------------

def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ("fedrp", "torch", "transformers", "tokenizers", "datasets", "pyarrow", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def cache_checks(task: Path, work: Path, args: argparse.Namespace) -> dict:
    """Row 0 edited (same length): with a new mtime, then with size and mtime as before. Each run must
    tokenize again and train on the edited row."""
    out = {}
    for label, row, keep_mtime in (("edited", EDITED, False), ("edited_same_size_and_mtime", EDITED_AGAIN, True)):
        edit_first_row(task.parent / "train.csv", row, keep_mtime)
        run = measure(task, work, args, label)
        expected = {"text": row[0], "label": LABELS.index(row[1])}
        out[label] = {"tokenized": run["tokenized"], "first_row": run["first_row"], "expected_first_row": expected,
                      "read_the_edit": run["first_row"] == expected, "met": run["tokenized"] and run["first_row"] == expected,
                      "seconds_to_first_step": run["seconds_to_first_step"], "token_caches": run["token_caches"]}
    return out


def targets(sizes: list[dict]) -> list[dict]:
    small, large = sizes[0], sizes[-1]
    out = []
    for kind in ("cold", "warm"):
        growth = large[kind]["peak_rss_mb"] - small[kind]["peak_rss_mb"]
        anon = large[kind]["peak_rss_anon_mb"] - small[kind]["peak_rss_anon_mb"]
        out.append({"target": f"peak RSS grows by at most {RSS_GROWTH_LIMIT_MB:g} MB from {small['rows']:,} to "
                              f"{large['rows']:,} rows ({kind})",
                    "value_mb": round(growth, 1), "anonymous_rss_growth_mb": round(anon, 1),
                    "met": growth <= RSS_GROWTH_LIMIT_MB})
    worst = max(s["warm"]["seconds_to_first_step"] for s in sizes)
    cpu = max(sum(s["warm"]["cpu_seconds"].values()) for s in sizes)
    out.append({"target": f"time to the first step on a cached file is under {WARM_SECONDS_LIMIT:g} s (warm, every size)",
                "value_seconds": worst, "cpu_seconds": round(cpu, 2), "met": worst < WARM_SECONDS_LIMIT})
    return out


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [CHILD]:  # one measured process (see measure)
        first_step(argv[1], argv[3:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=list(ROWS), help="training rows per size")
    parser.add_argument("--validation-rows", type=int, default=1000)
    parser.add_argument("--scratch", default=None, help="folder for the task files and caches (default: a temporary "
                                                         "folder, removed at the end; a given one is kept)")
    parser.add_argument("--model", default="", help="backbone name or folder (default: the packaged MiniLM)")
    parser.add_argument("--batch-size", type=int, default=32, help="`fedrp train`'s default")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--bf16", choices=["auto", "on", "off"], default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0, help="the synthetic data's")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds one run may take to its first step")
    parser.add_argument("--no-cache-check", action="store_true", help="skip the edited-file runs at the smallest size")
    args = parser.parse_args(argv)
    if min(args.rows) < 10 or args.validation_rows < 1 or args.batch_size < 1:
        parser.error("expected --rows of at least 10, and a positive --validation-rows and --batch-size")
    args.rows = sorted(set(args.rows))
    temporary = tempfile.TemporaryDirectory(prefix="bench_task_scale-") if args.scratch is None else None
    scratch = Path(temporary.name if temporary else args.scratch).resolve()
    out = {"benchmark": "task_scale", "rows": args.rows, "validation_rows": args.validation_rows,
           "method": "slash", "backbone": args.model or "default (all-MiniLM-L6-v2)", "batch_size": args.batch_size,
           "max_length": args.max_length, "bf16": args.bf16, "machine": machine(), "versions": versions(), "sizes": []}
    try:
        for rows in args.rows:
            work = scratch / f"rows-{rows}"
            if work.exists():
                shutil.rmtree(work)
            print(f"{rows:,} rows: writing the task in {work}", file=sys.stderr, flush=True)
            t = time.perf_counter()
            task = write_task(work / "task", rows, args.validation_rows, args.seed)
            size = {"rows": rows, "train_csv_bytes": (work / "task" / "train.csv").stat().st_size,
                    "write_seconds": round(time.perf_counter() - t, 2)}
            for kind in ("cold", "warm"):
                size[kind] = measure(task, work, args, kind)
            size["warm_read_the_cache"] = (not size["warm"]["tokenized"] and size["warm"]["token_caches"] ==
                                           size["cold"]["token_caches"] and size["warm"]["cache_bytes"]["fedrp"] ==
                                           size["cold"]["cache_bytes"]["fedrp"])
            out["sizes"].append(size)
            if rows == args.rows[0] and not args.no_cache_check:
                out["cache_follows_content"] = cache_checks(task, work, args)
        out["targets"] = targets(out["sizes"])
        out["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        out["scratch"] = None if temporary else str(scratch)
    finally:
        if temporary:
            temporary.cleanup()
    return report(out, out.pop("machine"))


if __name__ == "__main__":
    main()
