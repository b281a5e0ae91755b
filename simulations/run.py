"""A federated simulation from Python or the shell, printing one JSON object.

    python -m simulations.run --num-supernodes 10 --task sst2 --num-server-rounds 5 --json

Every run-config key of pyproject.toml is an option (`--key value`); the apps are the same
ServerApp and ClientApp that `flwr run .` starts. By default Flower starts a local Ray sized
to this machine; `--ray-address HEAD:PORT` (or $RAY_ADDRESS) runs the clients on an existing
Ray cluster instead (README, "A run on a Ray cluster").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys

from fedrp.federation import FedConfig


def _options(parser: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(FedConfig):
        kind = {"int": int, "float": float, "str": str}[f.type]
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=None, help=f"default {f.default!r}")


def ray_init_args(address: str | None) -> dict:
    """ray.init's arguments: a fresh local Ray sized to this machine, or the cluster at `address`.

    A cluster sizes itself (ray.init refuses num_cpus when joining one); "local" forces a fresh
    local Ray even where $RAY_ADDRESS or a `ray start` on this machine would be found.
    """
    if address and address != "local":
        return {"address": address, "include_dashboard": False}
    return {"address": "local", "num_cpus": os.cpu_count(), "include_dashboard": False}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-supernodes", type=int, default=10, help="virtual clients (one partition each)")
    parser.add_argument("--cpus-per-client", type=float, default=1.0)
    parser.add_argument("--json", action="store_true", help="print the run summary as one JSON object")
    parser.add_argument("--ray-address", default=os.environ.get("RAY_ADDRESS") or None,
                        help="an existing Ray cluster (HEAD:PORT) to run the clients on; default $RAY_ADDRESS, "
                             "else a local Ray ('local' forces that)")
    _options(parser)
    args = vars(parser.parse_args(argv))
    overrides = {k.replace("_", "-"): v for k, v in args.items()
                 if v is not None and k.replace("_", "-") in FedConfig().to_run_config()}
    for key in ("data-dir", "store", "checkpoint-dir", "resume-from"):  # Ray workers run elsewhere
        if overrides.get(key):
            overrides[key] = os.path.abspath(overrides[key])
    cfg = FedConfig.from_run_config({}, overrides)  # refuse bad values before starting Ray
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")

    from flwr.simulation import run_simulation

    from clients.client_app import build_client_app
    from server.server_app import build_server_app

    results: list[dict] = []
    run_simulation(
        server_app=build_server_app(overrides, results), client_app=build_client_app(overrides),
        num_supernodes=args["num_supernodes"],
        backend_config={"client_resources": {"num_cpus": args["cpus_per_client"], "num_gpus": 0.0},
                        "init_args": ray_init_args(args["ray_address"])},
    )
    if not results:
        raise SystemExit(f"the simulation ended without a result; see the log above and the store {cfg.store}")
    result = results[0]
    if args["json"]:
        print(json.dumps(result))
    else:
        for r in result["rounds"]:
            print(f"round {r['round']:>3}: {r['metrics']}  accepted {r['accepted']} refused {r['refused']}")
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("fedrp").setLevel(logging.INFO)
    main()
