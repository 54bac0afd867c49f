#!/usr/bin/env bash
# Start LocalStack with SQUASH deployed, then write .local/localstack-endpoints.json.
#
#   TREE_B=4 TREE_L=1 localstack/start.sh      (or: make localstack-up TREE_B=4 TREE_L=1)
#
# Needs a Docker engine and `docker compose`. Steps: make sam-build (layer pruned, imports
# checked) -> localstack/bundle.py (expand AWS::LanguageExtensions for this tree, zip the
# artifacts) -> docker compose up (the ready hook creates the buckets and deploys) -> wait for
# the hook's status -> localstack/endpoints.py. Running it again redeploys into the running
# container. SQUASH_SKIP_BUILD=1 skips make sam-build (make localstack-up has just run it).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

TREE_B=${TREE_B:-4}
TREE_L=${TREE_L:-1}
STACK=${STACK:-squash}
INDEX_BUCKET=${INDEX_BUCKET:-squash-index}
DEPLOY_BUCKET=${DEPLOY_BUCKET:-squash-deploy}
LOCALSTACK_URL=${LOCALSTACK_URL:-http://localhost:4566}
DEPLOY_TIMEOUT=${DEPLOY_TIMEOUT:-900}
ENDPOINTS=${ENDPOINTS:-$root/.local/localstack-endpoints.json}
tools_py=$root/.venv-tools/bin/python
venv_py=$root/.venv/bin/python # boto3 + localstack-client (dev extra) for endpoints.py
bundle=$root/.aws-sam/localstack
compose=(docker compose -f "$root/localstack/docker-compose.yml")

die() {
  echo "localstack/start.sh: $*" >&2
  exit 1
}

command -v docker >/dev/null 2>&1 || die "the docker CLI is not installed"
docker info >/dev/null 2>&1 ||
  die "no Docker engine is reachable ('docker info' failed). LocalStack runs Lambda code in containers and needs one; without Docker use the local stack (infra/local)."
docker compose version >/dev/null 2>&1 || die "the Docker Compose v2 plugin ('docker compose') is missing"
[ -x "$tools_py" ] || die "$tools_py is missing: run make tools"
"$venv_py" -c 'import localstack_client' 2>/dev/null || die "$venv_py lacks localstack-client: run make setup"

if [ "${SQUASH_SKIP_BUILD:-0}" != 1 ]; then
  make -C "$root" sam-build
fi
"$tools_py" localstack/bundle.py localstack --build-dir .aws-sam/build --out "$bundle" \
  --stack "$STACK" --branching "$TREE_B" --depth "$TREE_L" \
  --index-bucket "$INDEX_BUCKET" --deploy-bucket "$DEPLOY_BUCKET"

if [ -n "$("${compose[@]}" ps --quiet localstack 2>/dev/null)" ]; then
  echo "localstack/start.sh: LocalStack is running; redeploying stack $STACK"
  "${compose[@]}" exec -T localstack /etc/localstack/init/ready.d/10-squash.sh
else
  "${compose[@]}" up --detach
fi

echo "localstack/start.sh: waiting for the ready hook to deploy stack $STACK (up to ${DEPLOY_TIMEOUT}s)"
deadline=$((SECONDS + DEPLOY_TIMEOUT))
until [ -f "$bundle/status" ]; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    die "no deployment after ${DEPLOY_TIMEOUT}s; see: docker compose -f localstack/docker-compose.yml logs localstack"
  fi
  if [ -z "$("${compose[@]}" ps --quiet --status running localstack 2>/dev/null)" ]; then
    die "the LocalStack container stopped; see: docker compose -f localstack/docker-compose.yml logs localstack"
  fi
  sleep 3
done
status=$(<"$bundle/status")
[ "$status" = deployed ] ||
  die "deploying stack $STACK $status; see: docker compose -f localstack/docker-compose.yml logs localstack"

"$venv_py" localstack/endpoints.py --stack "$STACK" --endpoint "$LOCALSTACK_URL" \
  --bundle "$bundle/bundle.json" --out "$ENDPOINTS"
