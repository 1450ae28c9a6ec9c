#!/usr/bin/env bash
# `make image-test`: the gateway image against simulator pods (the simulator image), all with
# --network host:
#  - the image's default config passes `envoy --mode validate` with the module, inside the image;
#  - Envoy in the container (read-only root, uid 101) with that config, on free ports and with
#    `inference-pool` resolved to three pods on 127.0.0.2-4 (--add-host; STRICT_DNS reads
#    /etc/hosts), becomes ready on the probe listener's /ready;
#  - requests are routed with prefix affinity: every group of same-prefix requests lands on one
#    pod, and the groups use more than one pod;
#  - the module's metrics are served on the admin port and on the probe listener;
#  - the drain hook baked into the image (envoy-drain) turns /ready to 503.
source "$(dirname "$0")/image-env.sh"
started=$SECONDS
work="$(mktemp -d)"
tag="inference-scheduler-image-test-$$"
pods=(127.0.0.2 127.0.0.3 127.0.0.4)
cleanup() {
  podman rm -f -t 0 "$tag-gateway" "${pods[@]/#/$tag-pod-}" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "image-test FAILED: $*" >&2
  podman logs "$tag-gateway" 2>&1 | tail -30 >&2 || true
  exit 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
gateway_port=$(free_port) health_port=$(free_port) admin_port=$(free_port) pod_port=$(free_port)

run() { podman run --pull=never --network host --detach --rm "$@" >/dev/null; }

# 1. The default config, as shipped, inside the image.
podman run --pull=never --network host --rm --entrypoint /usr/local/bin/envoy "$GATEWAY_IMAGE" \
  --mode validate -c /etc/envoy/envoy.yaml >"$work/validate.log" 2>&1 \
  || { cat "$work/validate.log" >&2; fail "the image's default config does not validate"; }
grep -q "Dynamic module ABI version .* matched" "$work/validate.log" || fail "validate did not load the module"

# 2. Three simulated vLLM pods, from the simulator image.
for ip in "${pods[@]}"; do
  run --name "$tag-pod-$ip" "$SIM_IMAGE" --host "$ip" --port "$pod_port" --time-scale 0.02
done

# 3. The gateway: the default config with this run's ports and loopback addresses.
podman run --pull=never --rm --entrypoint cat "$GATEWAY_IMAGE" /etc/envoy/envoy.yaml \
  | sed -e "s/port_value: 10000/port_value: $gateway_port/" \
        -e "s/port_value: 19001/port_value: $health_port/" \
        -e "s/port_value: 19000/port_value: $admin_port/" \
        -e "s/port_value: 8000/port_value: $pod_port/" \
        -e "s/address: 0.0.0.0/address: 127.0.0.1/" >"$work/envoy.yaml"
chmod 644 "$work/envoy.yaml"
hosts=()
for ip in "${pods[@]}"; do hosts+=(--add-host "inference-pool:$ip"); done
run --name "$tag-gateway" --read-only "${hosts[@]}" -v "$work/envoy.yaml:/etc/envoy/envoy.yaml:ro" \
  "$GATEWAY_IMAGE" -c /etc/envoy/envoy.yaml --disable-hot-restart --concurrency 2

health="http://127.0.0.1:$health_port"
admin="http://127.0.0.1:$admin_port"
for ((i = 0; i < 200; i++)); do
  [[ "$(curl -s -o /dev/null -w '%{http_code}' "$health/ready")" == 200 ]] && break
  sleep 0.1
done
[[ "$(curl -s -o /dev/null -w '%{http_code}' "$health/ready")" == 200 ]] || fail "not ready after 20 s"
echo "gateway ready after $((SECONDS - started)) s"
for ((i = 0; i < 100; i++)); do
  members=$(curl -s "$admin/stats?filter=^cluster\.inference_pool\.membership_total$" | awk '{print $2}')
  [[ "$members" == 3 ]] && break
  sleep 0.1
done
[[ "$members" == 3 ]] || fail "the pool has ${members:-no} members, not 3"

# 4. Prefix affinity: 6 groups x 4 requests sharing a long system prompt per group.
declare -A homes=()
requests=0
for group in 0 1 2 3 4 5; do
  system=""
  for ((w = 0; w < 60; w++)); do system+="group$group word$w "; done
  for question in 0 1 2 3; do
    body=$(printf '{"model":"meta-llama/Llama-3.1-8B-Instruct","prompt":"%s Question %d?","max_tokens":1}' "$system" "$question")
    pod=$(curl -s -o /dev/null -D - -H 'content-type: application/json' -d "$body" \
      "http://127.0.0.1:$gateway_port/v1/completions" \
      | tr -d '\r' | awk -F': ' 'tolower($1) == "x-gateway-destination-endpoint" {print $2}')
    [[ -n "$pod" ]] || fail "no destination header for group $group"
    requests=$((requests + 1))
    if [[ -z "${homes[$group]:-}" ]]; then
      homes[$group]="$pod"
    elif [[ "${homes[$group]}" != "$pod" ]]; then
      fail "group $group went to ${homes[$group]} and $pod"
    fi
  done
done
distinct=$(printf '%s\n' "${homes[@]}" | sort -u | wc -l)
echo "6 groups x 4 requests, each group on one pod; pods used: $(printf '%s ' "${homes[@]}" | tr ' ' '\n' | sort | uniq -c | awk '{printf "%s x%d  ", $2, $1*4}')"
((distinct > 1)) || fail "every group on one pod: no sign of balancing"

# 5. The module's metrics, on the admin port and through the probe listener.
# Pod state is published once a second: wait for the pool's size.
for ((i = 0; i < 50; i++)); do
  curl -s "$admin/stats/prometheus" | grep -q "^envoy_inference_scheduler_pods{\?}\? 3$" && break
  sleep 0.1
done
for url in "$admin" "$health"; do
  curl -s "$url/stats/prometheus" >"$work/metrics.txt"
  decisions=$(awk '/^envoy_inference_scheduler_decisions_total\{/ {sum += $2} END {print sum + 0}' "$work/metrics.txt")
  [[ "$decisions" == "$requests" ]] || fail "$url: decisions_total sums to $decisions, not $requests"
  grep -q "^envoy_inference_scheduler_pods{\?}\? 3$" "$work/metrics.txt" || fail "$url: envoy_inference_scheduler_pods is not 3: $(grep scheduler_pods "$work/metrics.txt")"
done
echo "module metrics served on the admin port and the probe listener: decisions_total = $requests"

# 6. The drain hook of the pod spec (also baked into the image).
podman exec -e ADMIN_PORT="$admin_port" -e DRAIN_PROPAGATION_S=0 -e DRAIN_MAX_S=10 "$tag-gateway" \
  /bin/bash /usr/local/bin/envoy-drain >"$work/drain.log" || fail "drain hook failed: $(cat "$work/drain.log")"
[[ "$(curl -s -o /dev/null -w '%{http_code}' "$health/ready")" == 503 ]] || fail "/ready still 200 after the drain hook"
echo "drain hook: $(cat "$work/drain.log"); /ready now 503"

echo "image-test passed in $((SECONDS - started)) s"
