# The environment of a run on the device machine (sourced by device_grid.sh and harness/device_tuning.sh from the
# repository root): the carried wheels and backbone first on the path, no hub, caches and Flower's home in /tmp.
R=$(pwd)
export PYTHONPATH=/tmp/site:$R/.device/site HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
  FEDRP_CACHE=/tmp/fedrp PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 FLWR_TELEMETRY_ENABLED=0 FLWR_HOME=/tmp/flwr \
  HF_DATASETS_DISABLE_PROGRESS_BARS=1 TOKENIZERS_PARALLELISM=false
