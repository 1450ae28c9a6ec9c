#!/bin/bash
# preStop hook of the gateway pods (and `make image-test` runs it): stop taking new traffic and
# let the streams in flight finish before the kubelet sends SIGTERM (on which Envoy exits at once).
#  1. /healthcheck/fail: /ready answers 503, the readiness probe fails, the pod leaves the
#     Service's endpoints.
#  2. wait DRAIN_PROPAGATION_S for load balancers and kube-proxy to notice.
#  3. /drain_listeners?graceful: keep-alive connections are closed after their current request
#     (HTTP/1.1 `connection: close`, HTTP/2 GOAWAY), listeners close after --drain-time-s.
#  4. wait until no request is active, at most DRAIN_MAX_S.
# Only bash: no curl in the image (its /dev/tcp talks HTTP/1.1 to the loopback admin).
set -u
admin_port="${ADMIN_PORT:-19000}"
propagation="${DRAIN_PROPAGATION_S:-5}"
max_wait="${DRAIN_MAX_S:-150}"
# Requests in flight on the gateway listener (stat_prefix inference_gateway in envoy.yaml).
active_stat="${DRAIN_STAT:-http.inference_gateway.downstream_rq_active}"

admin() { # METHOD PATH -> response body
  exec 3<>"/dev/tcp/127.0.0.1/$admin_port" || return 1
  printf '%s %s HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n' "$1" "$2" >&3
  sed '1,/^\r$/d' <&3
  exec 3<&-
}

admin POST /healthcheck/fail >/dev/null
sleep "$propagation"
admin POST '/drain_listeners?graceful&inboundonly' >/dev/null
for ((waited = 0; waited < max_wait; waited++)); do
  active="$(admin GET "/stats?filter=^${active_stat//./\\.}\$" | awk -v stat="$active_stat:" '$1 == stat { print $2 }')"
  [[ "${active:-0}" == 0 ]] && break
  sleep 1
done
echo "drained after ${waited}s (active requests: ${active:-0})"
