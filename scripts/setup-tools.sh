#!/usr/bin/env bash
# System tools the tests need beyond .venv: kubectl (renders deploy/kubernetes with its built-in
# kustomize). Installed from Debian (package kubernetes-client) when missing; idempotent.
set -euo pipefail
if command -v kubectl >/dev/null; then
  exit 0
fi
if [[ $(id -u) != 0 ]]; then
  echo "kubectl is missing and installing it needs root: apt-get install kubernetes-client" >&2
  exit 1
fi
echo "installing kubectl (Debian kubernetes-client)" >&2
apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends kubernetes-client >/dev/null
kubectl version --client >/dev/null
