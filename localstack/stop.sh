#!/usr/bin/env bash
# Stop LocalStack (containers, network and the Lambda containers it started) and forget the
# endpoints file. LocalStack keeps no state between runs (no PERSISTENCE), so the next
# localstack/start.sh deploys from scratch.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ENDPOINTS=${ENDPOINTS:-$root/.local/localstack-endpoints.json}

if ! command -v docker >/dev/null 2>&1; then
  echo "localstack/stop.sh: the docker CLI is not installed; nothing to stop" >&2
elif ! docker info >/dev/null 2>&1; then
  echo "localstack/stop.sh: no Docker engine is reachable; nothing to stop" >&2
else
  docker compose -f "$root/localstack/docker-compose.yml" down --volumes --remove-orphans
  # Lambda containers LocalStack started (named after its container), should any survive it.
  mapfile -t leftovers < <(docker ps --all --quiet --filter "name=squash-localstack-lambda")
  if [ "${#leftovers[@]}" -gt 0 ]; then
    docker rm --force "${leftovers[@]}" >/dev/null
  fi
fi
rm -f "$ENDPOINTS" "$root/.aws-sam/localstack/status"
