#!/bin/bash
# LocalStack ready hook - runs inside the container once LocalStack is up (and again when
# localstack/start.sh redeploys into a running container). Creates the index bucket and, when
# localstack/start.sh has staged a bundle in /etc/localstack/squash, uploads its artifacts and
# deploys its template (AWS::LanguageExtensions already expanded) with awslocal. Leaves
# "deployed" or "failed" in /etc/localstack/squash/status for start.sh.
set -euo pipefail

bundle=${SQUASH_BUNDLE_DIR:-/etc/localstack/squash}
STACK=squash
INDEX_BUCKET=squash-index
DEPLOY_BUCKET=squash-deploy
if [ -f "$bundle/bundle.env" ]; then
  # shellcheck source=/dev/null
  . "$bundle/bundle.env"
fi

# awslocal points the command's own client at LocalStack; the S3 upload nested inside
# `cloudformation deploy --s3-bucket` honours only this (AWS CLI >= 1.29 / 2.13).
export AWS_ENDPOINT_URL=${AWS_ENDPOINT_URL:-http://localhost:4566}

log() { echo "squash-init: $*"; }
# Any failing command ends the hook; tell start.sh instead of letting it wait for a timeout.
trap 'echo failed >"$bundle/status"' ERR
finish() {
  echo "$1" >"$bundle/status"
  log "$1"
}
ensure_bucket() {
  awslocal s3api head-bucket --bucket "$1" >/dev/null 2>&1 || awslocal s3 mb "s3://$1"
}

ensure_bucket "$INDEX_BUCKET"
if [ ! -f "$bundle/template.yaml" ]; then
  log "no bundle in $bundle (run localstack/start.sh): only s3://$INDEX_BUCKET was created"
  exit 0
fi

ensure_bucket "$DEPLOY_BUCKET"
awslocal s3 sync --only-show-errors "$bundle/artifacts/" "s3://$DEPLOY_BUCKET/"
mapfile -t params <"$bundle/parameters"
# Templates over 51,200 bytes (big trees) must go through S3.
template_via_s3=()
if [ "$(wc -c <"$bundle/template.yaml")" -gt 51200 ]; then
  template_via_s3=(--s3-bucket "$DEPLOY_BUCKET")
fi
log "deploying stack $STACK: ${params[*]}"
if awslocal cloudformation deploy \
  --stack-name "$STACK" \
  --template-file "$bundle/template.yaml" \
  "${template_via_s3[@]}" \
  --capabilities CAPABILITY_IAM CAPABILITY_AUTO_EXPAND \
  --no-fail-on-empty-changeset \
  --parameter-overrides "${params[@]}"; then
  finish deployed
else
  awslocal cloudformation describe-stack-events --stack-name "$STACK" --max-items 25 \
    --query 'StackEvents[].[LogicalResourceId,ResourceStatus,ResourceStatusReason]' --output text || true
  finish failed
fi
