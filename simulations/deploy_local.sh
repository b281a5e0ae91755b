#!/usr/bin/env bash
# The deployment engine on one machine: a SuperLink with TLS and SuperNode authentication,
# NUM_NODES SuperNodes (one GLUE partition each), a warm ClientApp worker beside each, and one
# `flwr run` of the fedrp apps.
#
#   NUM_NODES=2 GLUE_DIR=../shared/glue simulations/deploy_local.sh
#
# Everything it writes (certificates, keys, logs, the run store, checkpoints, Flower's own
# state) goes to WORKDIR, which is kept; every process it starts is stopped on exit.
# Lines that differ on real edge devices are marked "REAL DEVICES:".
#
# Settings (environment variables):
#   NUM_NODES=2            SuperNodes to start on this machine
#   WORKDIR=<new temp dir> where everything is written (must not exist or be empty)
#   GLUE_DIR=$FEDRP_GLUE_DIR or ../shared/glue   GLUE in the official layout (absolute or relative)
#   SUPERLINK_PORT=9500    one port for the SuperLink's Fleet, Control and Runtime APIs
#   CLIENTAPPIO_PORT=9601  SuperNode i (0-based) serves its ClientApp API on CLIENTAPPIO_PORT+i
#   ROUNDS=3               num-server-rounds
#   RUN_CONFIG=""          more run-config overrides, e.g. "task='mrpc' max-train-samples-per-client=50"
#   NODE_CONFIG_<i>=""     SuperNode i's --node-config instead of its GLUE partition, e.g. a device's own
#                          files: NODE_CONFIG_1="data-file='/data/train.jsonl' eval-file='/data/dev.jsonl'"
#   RUN_TIMEOUT=1800       seconds before the run is given up
#   THREADS_PER_NODE=<cores / NUM_NODES>  torch threads of each node's ClientApp (OMP_NUM_THREADS)
#   WARM_CLIENTS=1         start a clients.worker per SuperNode (its socket: WORKDIR/worker-<i>.sock), so each
#                          message skips importing torch and building the model; 0: every message's
#                          flwr-clientapp process imports the real ClientApp itself, as Flower runs it
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NUM_NODES=${NUM_NODES:-2}
WORKDIR=${WORKDIR:-$(mktemp -d -t fedrp-deploy-XXXXXX)}
GLUE_DIR=${GLUE_DIR:-${FEDRP_GLUE_DIR:-$REPO/../shared/glue}}
SUPERLINK_PORT=${SUPERLINK_PORT:-9500}
CLIENTAPPIO_PORT=${CLIENTAPPIO_PORT:-9601}
ROUNDS=${ROUNDS:-3}
RUN_CONFIG=${RUN_CONFIG:-}
RUN_TIMEOUT=${RUN_TIMEOUT:-1800}
WARM_CLIENTS=${WARM_CLIENTS:-1}
# All nodes share this machine's cores, as Flower's simulation gives each client one CPU: without a
# cap every client's torch takes every core, and two clients training at once ran 3 to 5x slower.
# REAL DEVICES: leave it unset (torch then uses the device's own cores).
THREADS_PER_NODE=${THREADS_PER_NODE:-$(( $(nproc) / NUM_NODES > 0 ? $(nproc) / NUM_NODES : 1 ))}
[[ $WARM_CLIENTS == [01] ]] || { echo "WARM_CLIENTS must be 0 or 1, got '$WARM_CLIENTS'" >&2; exit 2; }

# REAL DEVICES: the SuperLink's public DNS name or IP; SuperNodes and the CLI dial it.
SUPERLINK_HOST=127.0.0.1

mkdir -p "$WORKDIR"
WORKDIR=$(cd "$WORKDIR" && pwd)  # the run config needs absolute paths: the apps run elsewhere
GLUE_DIR=$(cd "$GLUE_DIR" && pwd)
[[ -f $GLUE_DIR/SST-2/dev.tsv ]] || { echo "no GLUE at $GLUE_DIR (set GLUE_DIR)" >&2; exit 2; }
[[ -z $(ls -A "$WORKDIR") ]] || { echo "WORKDIR $WORKDIR is not empty" >&2; exit 2; }
mkdir -p "$WORKDIR"/{certs,keys,logs,flwr}
# A Unix socket's path ends at 107 bytes.
if [[ $WARM_CLIENTS == 1 ]] && ((${#WORKDIR} + ${#NUM_NODES} + 13 > 107)); then
    echo "WORKDIR $WORKDIR is too long a path for the workers' sockets (set a shorter one, or WARM_CLIENTS=0)" >&2
    exit 2
fi

# Flower writes its config, installed apps and credentials under FLWR_HOME.
export FLWR_HOME=$WORKDIR/flwr
export FLWR_TELEMETRY_ENABLED=0
# Each SuperNode's flower-superexec polls for a message to start a ClientApp process for, every
# second by default: up to a second of idle waiting per message on a round of a few seconds.
export FLWR_SUPEREXEC_TASK_POLL_INTERVAL=${FLWR_SUPEREXEC_TASK_POLL_INTERVAL:-0.2}
# The app's dependencies are installed already; without this the SuperLink runs `uv sync`
# of [project].dependencies for every run (torch alone is gigabytes).
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}  # the default backbone ships in a pip package
# Flower CLI commands migrate a pyproject.toml found in the working directory; never run
# them from the checkout.
cd "$WORKDIR"

PIDS=()
cleanup() {
    local status=$?
    # Each server process leads its own session (setsid), so one signal reaches its group.
    # The helpers Flower spawns (flower-superexec, flwr-serverapp, flwr-clientapp) watch
    # their parent's pid and exit with it. A warm worker removes its socket on SIGTERM.
    for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    sleep 2
    for pid in "${PIDS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
    echo "logs, store and checkpoints are in $WORKDIR" >&2
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for_port() {  # host port seconds
    local deadline=$((SECONDS + $3))
    until (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; do
        ((SECONDS < deadline)) || { echo "nothing listens on $1:$2 after $3 s" >&2; return 1; }
        sleep 0.5
    done
}

wait_for_socket() {  # path pid seconds
    local deadline=$((SECONDS + $3))
    until [[ -S $1 ]]; do
        kill -0 "$2" 2>/dev/null || { echo "the worker for $1 exited; see its log in $WORKDIR/logs" >&2; return 1; }
        ((SECONDS < deadline)) || { echo "no socket at $1 after $3 s" >&2; return 1; }
        sleep 0.5
    done
}

# ---- 1. Certificates ---------------------------------------------------------------------
# A private CA signs the SuperLink's certificate; SuperNodes and the CLI trust only that CA.
# REAL DEVICES: keep ca.key offline; put the SuperLink's real DNS name / IP in subjectAltName.
echo "== certificates" >&2
C=$WORKDIR/certs
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/O=fedrp/CN=fedrp local CA" \
    -keyout "$C/ca.key" -out "$C/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/O=fedrp/CN=localhost" \
    -keyout "$C/server.key" -out "$C/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' \
    > "$C/server.ext"
openssl x509 -req -in "$C/server.csr" -CA "$C/ca.crt" -CAkey "$C/ca.key" -CAcreateserial \
    -days 30 -sha256 -extfile "$C/server.ext" -out "$C/server.pem" 2>/dev/null

# ---- 2. One authentication key pair per SuperNode --------------------------------------------
# REAL DEVICES: each device runs this ssh-keygen itself; the private key never leaves it and
# only node-$i.pub is sent to the operator for step 4.
echo "== SuperNode keys" >&2
for ((i = 0; i < NUM_NODES; i++)); do
    ssh-keygen -t ecdsa -b 384 -N "" -C "fedrp-node-$i" -f "$WORKDIR/keys/node-$i" -q
done

# ---- 3. SuperLink ------------------------------------------------------------------------
# REAL DEVICES: add `--host 0.0.0.0` (or the server's interface) so devices can reach it, and
# `--database $WORKDIR/superlink.db` so registered nodes survive a restart. This one port
# serves the Fleet, Control and Runtime APIs, and open-source Flower authenticates nobody on
# the Control API (register-node, start-run): let devices reach only /v1/fleet/ (reverse proxy
# or firewall) and keep the rest on the operator's network.
echo "== SuperLink on $SUPERLINK_HOST:$SUPERLINK_PORT" >&2
setsid flower-superlink \
    --ssl-ca-certfile "$C/ca.crt" --ssl-certfile "$C/server.pem" --ssl-keyfile "$C/server.key" \
    --enable-supernode-auth --disable-runtime-dependency-installation \
    --port "$SUPERLINK_PORT" >"$WORKDIR/logs/superlink.log" 2>&1 &
PIDS+=($!)
wait_for_port "$SUPERLINK_HOST" "$SUPERLINK_PORT" 60

# The CLI's connection to it (the Control API shares the SuperLink's port).
cat >"$FLWR_HOME/config.toml" <<EOF
[superlink]
default = "fedrp-tls"

[superlink.fedrp-tls]
address = "$SUPERLINK_HOST:$SUPERLINK_PORT"
root-certificates = "$C/ca.crt"
EOF

# ---- 4. Register the SuperNodes' public keys; unregistered keys are refused ----------------
echo "== registering $NUM_NODES SuperNodes" >&2
for ((i = 0; i < NUM_NODES; i++)); do
    flwr supernode register "$WORKDIR/keys/node-$i.pub" fedrp-tls --name "node-$i" >>"$WORKDIR/logs/cli.log" 2>&1 \
        || { cat "$WORKDIR/logs/cli.log" >&2; exit 1; }
done

# ---- 5. Warm ClientApp workers ------------------------------------------------------------
# A SuperNode starts a fresh flwr-clientapp process for every message. The app it loads
# (clients.warm) only hands the message to the worker its node config names, which imported
# torch, transformers and the real ClientApp once and keeps the model and data caches warm.
# The worker creates its socket (mode 0600) once it is ready, and serves the code of this
# checkout: restart it after updating the app.
# REAL DEVICES: the operator starts one beside each SuperNode, as the SuperNode's user, from
# the installed fedrp of the run's version: `python -m clients.worker --socket /run/fedrp/worker.sock`.
if [[ $WARM_CLIENTS == 1 ]]; then
    echo "== $NUM_NODES warm ClientApp workers" >&2
    WORKERS=()
    for ((i = 0; i < NUM_NODES; i++)); do
        OMP_NUM_THREADS=$THREADS_PER_NODE PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH} \
            setsid python -m clients.worker --socket "$WORKDIR/worker-$i.sock" \
            >"$WORKDIR/logs/worker-$i.log" 2>&1 &
        PIDS+=($!)
        WORKERS+=($!)
    done
    for ((i = 0; i < NUM_NODES; i++)); do
        wait_for_socket "$WORKDIR/worker-$i.sock" "${WORKERS[$i]}" 300
    done
fi

# ---- 6. SuperNodes -----------------------------------------------------------------------
# Each starts a fresh flwr-clientapp process per message, talking to it on its own --port.
# REAL DEVICES: one per device, with --superlink set to the SuperLink's address, the device's
# own key, and its own examples instead of a GLUE partition:
#   --node-config "data-file='/data/train.jsonl' eval-file='/data/dev.jsonl' worker-socket='/run/fedrp/worker.sock'"
# (columns text, [pair,] label; see fedrp.federation.local_data_file).
echo "== $NUM_NODES SuperNodes" >&2
for ((i = 0; i < NUM_NODES; i++)); do
    own="NODE_CONFIG_$i"
    node_config=${!own:-partition-id=$i num-partitions=$NUM_NODES}
    if [[ $WARM_CLIENTS == 1 ]]; then
        node_config+=" worker-socket='$WORKDIR/worker-$i.sock'"
    fi
    OMP_NUM_THREADS=$THREADS_PER_NODE setsid flower-supernode \
        --superlink "$SUPERLINK_HOST:$SUPERLINK_PORT" --root-certificates "$C/ca.crt" \
        --auth-supernode-private-key "$WORKDIR/keys/node-$i" \
        --port $((CLIENTAPPIO_PORT + i)) \
        --node-config "$node_config" \
        >"$WORKDIR/logs/supernode-$i.log" 2>&1 &
    PIDS+=($!)
done

# ---- 7. The run ----------------------------------------------------------------------------
# `flwr run` moves a legacy [tool.flwr.federations] table out of pyproject.toml by rewriting
# the file in place; while the checkout still has one, build the app from a copy without it.
APP=$REPO
if grep -q '^\[tool\.flwr\.federations' "$REPO/pyproject.toml"; then
    APP=$WORKDIR/app
    mkdir -p "$APP"
    cp -r "$REPO"/{fedrp,clients,server,README.md} "$APP"/
    sed '/^\[tool\.flwr\.federations/,$d' "$REPO/pyproject.toml" >"$APP/pyproject.toml"
fi

# Paths in the run config must be absolute: the ServerApp and ClientApps run in other
# processes and directories. REAL DEVICES: data-dir only needs to exist on the server then
# (it evaluates on the dev set); devices read their node-config data-file.
CONFIG="num-server-rounds=$ROUNDS fraction-train=1.0 min-train-nodes=$NUM_NODES partition-scheme='iid'"
CONFIG+=" data-dir='$GLUE_DIR' store='$WORKDIR/store.sqlite' checkpoint-dir='$WORKDIR/checkpoints'"
# A second --run-config overrides keys of the first (a key twice in one string is an error).
echo "== flwr run ($CONFIG $RUN_CONFIG)" >&2
timeout "$RUN_TIMEOUT" flwr run "$APP" fedrp-tls --run-config "$CONFIG" ${RUN_CONFIG:+--run-config "$RUN_CONFIG"} \
    --stream 2>&1 | tee "$WORKDIR/logs/run.log"

# `flwr run` exits 0 even when the ServerApp fails: judge the run by its store.
[[ -f $WORKDIR/store.sqlite ]] || { echo "the ServerApp wrote no store; see $WORKDIR/logs" >&2; exit 1; }
PYTHONPATH=$REPO python - "$WORKDIR/store.sqlite" <<'EOF'
import sys
from server.store import RunStore

store = RunStore(sys.argv[1])
run_id = store.db.execute("SELECT max(id) FROM runs").fetchone()[0]
run = store.run(run_id)
for r in store.rounds(run_id):
    print(f"round {r['round']}: {r['server_metrics']}  accepted {r['accepted']} refused {r['refused']}")
print(f"run {run_id}: {run['status']} {run['error'] or ''}")
sys.exit(0 if run["status"] == "completed" else 1)
EOF
