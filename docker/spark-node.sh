#!/bin/sh
# One Spark standalone daemon, run from the pyspark installation: `spark-node.sh master` or
# `spark-node.sh worker`. docker-compose.yml and tests/integration/test_cluster.py both start the
# cluster with this script, so the cluster the tests run is the one the compose file runs.
#
# Settings (environment):
#   SPARK_HOME               default: the installed pyspark package folder
#   SPARK_HOST               address to bind and advertise (default: this host's name)
#   SPARK_MASTER_PORT        master: RPC port (default 7077)
#   SPARK_MASTER_WEBUI_PORT  master: web UI port (default 8080)
#   SPARK_MASTER_URL         worker: spark://HOST:PORT of the master
#   SPARK_WORKER_CORES       worker: cores to offer (default 2)
#   SPARK_WORKER_MEMORY      worker: memory to offer (default 2g)
#   SPARK_WORKER_WEBUI_PORT  worker: web UI port (default 8081)
set -eu
: "${SPARK_HOME:=$(python3 -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')}"
: "${SPARK_HOST:=$(hostname)}"
export SPARK_HOME
case "${1:-}" in
  master)
    exec "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.master.Master \
      --host "$SPARK_HOST" --port "${SPARK_MASTER_PORT:-7077}" \
      --webui-port "${SPARK_MASTER_WEBUI_PORT:-8080}" ;;
  worker)
    exec "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.worker.Worker "$SPARK_MASTER_URL" \
      --host "$SPARK_HOST" --cores "${SPARK_WORKER_CORES:-2}" --memory "${SPARK_WORKER_MEMORY:-2g}" \
      --webui-port "${SPARK_WORKER_WEBUI_PORT:-8081}" ;;
  *)
    echo "usage: spark-node.sh master|worker" >&2
    exit 2 ;;
esac
