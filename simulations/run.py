"""A federated simulation from Python or the shell, printing one JSON object.

    python -m simulations.run --num-supernodes 10 --task sst2 --num-server-rounds 5 --json

Every run-config key of pyproject.toml is an option (`--key value`); the apps are the same
ServerApp and ClientApp that `flwr run .` starts. By default Flower starts a local Ray sized
to this machine; `--ray-address HEAD:PORT` (or $RAY_ADDRESS) runs the clients on an existing
Ray cluster instead (docs/guide/federation.md, "A run on a Ray cluster").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Read by datasets and huggingface_hub at import, and inherited by Ray's workers: no progress bar
# per worker and per tokenized split; the run prints one line per round instead.
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from fedrp.cli import OneLineParser  # after the environment above
from fedrp.federation import FedConfig, warm_caches
from server.stopping import STOP, Interrupted

ENGINES = ("flower", "inprocess")


def _options(parser: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(FedConfig):
        kind = {"int": int, "float": float, "str": str}[f.type]
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=None,
                            help=f"{f.metadata['help']} (default {f.default!r})")  # fedrp.spec.option


def ray_init_args(address: str | None) -> dict:
    """ray.init's arguments: a fresh local Ray sized to this machine, or the cluster at `address`.

    A cluster sizes itself (ray.init refuses num_cpus when joining one); "local" forces a fresh
    local Ray even where $RAY_ADDRESS or a `ray start` on this machine would be found.
    """
    if address and address != "local":
        return {"address": address, "include_dashboard": False}
    return {"address": "local", "num_cpus": os.cpu_count(), "include_dashboard": False}


def check_paths(cfg: FedConfig, num_supernodes: int) -> None:
    """What would otherwise fail only after Ray has started, or after the first round: the aggregation rule,
    clients, the store, the checkpoint folder, the checkpoint to resume, the dashboard's address (the
    backbone's length is warm_caches' first check)."""
    from fedrp.files import check_writable_folder
    from server.checkpoint import check_checkpoint
    from server.store import check_store
    from server.strategy import check_aggregation

    check_aggregation(cfg)
    if num_supernodes < 1:
        raise ValueError(f"num-supernodes must be at least 1, got {num_supernodes}")
    if cfg.min_train_nodes > num_supernodes:  # every round would end in TooFewReplies after training
        raise ValueError(f"min-train-nodes {cfg.min_train_nodes} is more than the {num_supernodes} clients a round "
                         f"can sample; expected at most num-supernodes")
    check_store(Path(cfg.store))
    check_writable_folder(cfg.checkpoint_dir, "checkpoint-dir", "checkpoints")
    if cfg.resume_from:
        check_checkpoint(cfg.resume_from)
    if cfg.dashboard_port:  # the ServerApp binds it again once this probe has let it go
        from server.dashboard.app import TOKEN_ENV, listen

        listen(cfg.dashboard_host, cfg.dashboard_port, os.environ.get(TOKEN_ENV)).close()


def build_parser() -> OneLineParser:
    """The runner's own options, then one per run-config key (FedConfig)."""
    parser = OneLineParser(prog="simulations.run", description=__doc__.splitlines()[0])
    parser.add_argument("--num-supernodes", type=int, default=10, help="virtual clients (one partition each)")
    parser.add_argument("--cpus-per-client", type=float, default=1.0)
    parser.add_argument("--engine", choices=ENGINES, default="flower",
                        help="flower: Flower's simulation engine (Ray workers); inprocess: the same apps called in "
                             "this process, one client after another, without Ray's start-up (simulations.inprocess)")
    parser.add_argument("--json", action="store_true", help="print the run summary as one JSON object")
    parser.add_argument("--verbose", action="store_true", help="keep Flower's and Ray's informational logs")
    parser.add_argument("--ray-address", default=os.environ.get("RAY_ADDRESS") or None,
                        help="an existing Ray cluster (HEAD:PORT) to run the clients on; default $RAY_ADDRESS, "
                             "else a local Ray ('local' forces that)")
    _options(parser)
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    overrides = {k.replace("_", "-"): v for k, v in args.items()
                 if v is not None and k.replace("_", "-") in FedConfig().to_run_config()}
    for key in ("data-dir", "store", "checkpoint-dir", "resume-from"):  # Ray workers run elsewhere
        if overrides.get(key):
            overrides[key] = os.path.abspath(overrides[key])
    task = overrides.get("task", "")
    if task.endswith(".toml"):  # a user's task file (fedrp.tasks), read by every worker
        overrides["task"] = os.path.abspath(task)
    elif "=" in task:  # its keys given inline: their data paths made absolute for the same reason
        from fedrp.tasks import canonical_inline

        try:
            overrides["task"] = canonical_inline(task)
        except ValueError as err:
            parser.error(str(err))
    try:
        cfg = FedConfig.from_run_config({}, overrides)  # refuse bad values before starting Ray
        check_paths(cfg, args["num_supernodes"])
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    progress(sys.stderr if args["json"] else sys.stdout)
    STOP.clear()  # a run in a process where an earlier one was stopped
    RECEIVED.clear()
    results: list[dict] = []
    from server.rounds import TooFewReplies

    # SIGTERM (kill, timeout, systemd, batch schedulers) stops a run as Ctrl-C does.
    with handling(_interrupt_now, signal.SIGTERM):
        try:
            # Tokenize and partition once here, into the on-disk caches, instead of once in every worker.
            try:
                warm_caches(cfg, args["num_supernodes"])
            except (ValueError, FileNotFoundError) as err:
                parser.error(str(err))

            from clients.client_app import build_client_app
            from server.server_app import build_server_app

            quiet_libraries(args["verbose"])  # after Flower's import, which sets its own logger's level
            server_app, client_app = build_server_app(overrides, results), build_client_app(overrides)
            if args["engine"] == "inprocess":
                from simulations.inprocess import run_in_process

                run_in_process(server_app, client_app, args["num_supernodes"])
            else:
                from flwr.simulation import run_simulation

                start_ray(args["ray_address"])
                with handling(_stop_on_interrupt, signal.SIGINT, signal.SIGTERM):  # after ray.init's own handler
                    run_simulation(
                        server_app=server_app, client_app=client_app, num_supernodes=args["num_supernodes"],
                        backend_config={"client_resources": {"num_cpus": args["cpus_per_client"], "num_gpus": 0.0},
                                        "init_args": ray_init_args(args["ray_address"])},
                    )
        except (KeyboardInterrupt, Interrupted):
            stop_server()
        except TooFewReplies as err:  # an outcome the store records, not a bug: one line, status 1
            raise SystemExit(f"simulations.run: run failed: {err}") from None
    if STOP.is_set() and not results:  # a run that finished before the request stays completed
        print(f"simulations.run: interrupted: {interrupted_line(cfg)}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        # 128 + the signal: the shell's 130 for Ctrl-C, 143 for SIGTERM. os._exit, not SystemExit: after a
        # second Ctrl-C Flower's worker threads may wait in ray.get on actors that are gone, and the interpreter
        # would join them. The store and the checkpoints are already on disk (every write is its own
        # transaction or an atomic rename).
        os._exit(128 + (RECEIVED[0] if RECEIVED else signal.SIGINT))
    if not results:
        raise SystemExit(f"the simulation ended without a result; see the log above and the store {cfg.store}")
    result = results[0]
    if args["json"]:
        print(json.dumps(result))
    else:
        print(closing_summary(result, cfg))
    return result


def stop_server() -> None:
    """After Ctrl-C on the in-process engine (or a second one on Flower's): the ServerApp ends its
    round at the next poll and records the run as interrupted; then Ray goes down with its workers."""
    import threading

    STOP.set()
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join(timeout=30)
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


def start_ray(address: str | None) -> None:
    """Ray started here, as Flower's engine would start it, so that fedrp's signal handlers can be set after
    ray.init: its own SIGTERM handler exits from wherever the main thread is, inside Flower's engine."""
    import ray

    # As Flower's Ray backend does: the workers import from this process's path.
    pythonpath = os.pathsep.join([*sys.path, *filter(None, [os.environ.get("PYTHONPATH")])])
    os.environ["PYTHONPATH"] = pythonpath
    ray.init(runtime_env={"env_vars": {"PYTHONPATH": pythonpath}}, **ray_init_args(address))


@contextmanager
def handling(handler, *signums: int) -> Iterator[None]:
    """`handler` for these signals in the block, the previous handlers after it: main() may run in a test's
    process, whose own handlers must come back."""
    before = {signum: signal.signal(signum, handler) for signum in signums}
    try:
        yield
    finally:
        for signum, previous in before.items():
            signal.signal(signum, previous)


SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}
RECEIVED: list[int] = []  # the signals that stopped this run, first first: its exit status is 128 + the first


def _interrupt_now(signum: int, frame) -> None:
    """SIGTERM before Flower's engine runs, or on the in-process engine: what Ctrl-C does there, a
    KeyboardInterrupt in the main thread, which the round loop records as an interruption."""
    RECEIVED.append(signum)
    raise KeyboardInterrupt


def _stop_on_interrupt(signum: int, frame) -> None:
    """Ctrl-C or SIGTERM under Flower's engine asks the ServerApp (a thread) to stop, and nothing more: the
    ServerApp records the run as interrupted and ends; Flower then lets its workers collect the
    clients in flight and shuts Ray down itself. Raising here instead unwinds Flower's engine while
    its workers still wait on Ray, and Ray's core worker ends the process with status 1.
    A second signal does not wait for the clients in flight."""
    RECEIVED.append(signum)
    if STOP.is_set():
        logging.getLogger("flwr").setLevel(logging.CRITICAL)  # the actors it ends log errors then
        raise KeyboardInterrupt
    STOP.set()
    name = SIGNAL_NAMES.get(signum, f"signal {signum}")
    print(f"simulations.run: stopping once the clients in flight reply ({name} again: now)", file=sys.stderr,
          flush=True)


def interrupted_line(cfg: FedConfig) -> str:
    """What the store says about the newest run: the round reached and where to resume from."""
    from server.store import RunStore

    try:
        store = RunStore.open_readonly(cfg.store)
    except (FileNotFoundError, ValueError):
        return "before the first round"
    runs = store.runs()
    store.close()
    if not runs:
        return "before the first round"
    return f"run {runs[0]['id']} {runs[0]['status']}: {runs[0]['error']}"


def quiet_libraries(verbose: bool) -> None:
    """Warnings and errors only from the libraries (Flower logs every aggregation and, on a normal
    finish, warns that it terminates its actors); --verbose keeps all of it."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    flwr = logging.getLogger("flwr")
    flwr.setLevel(logging.INFO if verbose else logging.ERROR)
    flwr.propagate = False  # Flower has its own console handler: without this every line prints twice
    if not verbose:  # Ray's notice about a future default for GPU environment variables; no GPU is asked for here
        warnings.filterwarnings("ignore", message="Tip: In future versions of Ray", category=FutureWarning)


def progress(stream) -> None:
    """The server's per-round lines, as they happen, on `stream`."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    server = logging.getLogger("fedrp.server")
    server.addHandler(handler)
    server.setLevel(logging.INFO)
    server.propagate = False


def closing_summary(result: dict, cfg: FedConfig) -> str:
    """Where the run is kept and how to look at it."""
    final = ", ".join(f"{k} {v:.4f}" for k, v in result["final_metrics"].items())
    return "\n".join([
        (f"run {result['run_id']} {result['status']}: {final} after {result['rounds'][-1]['round']} rounds"
         f" ({len(result['refusals'])} replies refused)"),
        f"store:       {os.path.abspath(result['store'])}",
        f"checkpoints: {os.path.join(os.path.abspath(cfg.checkpoint_dir), 'run-' + str(result['run_id']))}",
        f"dashboard:   fedrp dashboard --store {os.path.abspath(result['store'])}   (then open http://127.0.0.1:8050)",
    ])


if __name__ == "__main__":
    main()
