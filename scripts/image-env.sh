# Sourced by scripts/image*.sh: podman set up for this machine, offline and as root.
#  - Debian's podman, buildah, runc and debootstrap, installed if missing (apt, once).
#  - containers.conf: runc (crun fails on this host's hybrid cgroups), cgroupfs, events in a file,
#    and fixed ulimits (the sandbox cannot raise them); storage.conf: overlay under /var/lib, so
#    the base images survive a fresh clone and are reused.
# Nothing is ever pulled: every build and run passes --pull=never.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
image_work="$root/target/image"
mkdir -p "$image_work"

# Image names. The local bases stand in for the ecosystem images the Dockerfile defaults to.
IMAGE_REPO="${IMAGE_REPO:-localhost/inference-scheduler}"
BASE_IMAGE="$IMAGE_REPO/bookworm-minbase:local"     # for debian:bookworm-slim
ENVOY_BASE_IMAGE="$IMAGE_REPO/envoy-base:v1.40.0-local"  # for envoyproxy/envoy:v1.40-latest
MODULE_BASE_IMAGE="$IMAGE_REPO/busybox-base:local"   # for busybox:1.37
GATEWAY_IMAGE="$IMAGE_REPO/gateway:latest"
MODULE_IMAGE="$IMAGE_REPO/module:latest"
SIM_IMAGE="$IMAGE_REPO/inference-sim:latest"

if [[ $(id -u) != 0 ]]; then
  echo "podman needs root on this machine (run make image / make image-test as root)" >&2
  exit 1
fi

# Debian package of each tool the image scripts run.
declare -A packages=([podman]=podman [buildah]=buildah [runc]=runc [debootstrap]=debootstrap
  [curl]=curl [strip]=binutils)
missing=()
for tool in "${!packages[@]}"; do
  command -v "$tool" >/dev/null || missing+=("${packages[$tool]}")
done
if ((${#missing[@]})); then
  echo "installing ${missing[*]} from Debian" >&2
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${missing[@]}" uidmap >/dev/null
fi

cat >"$image_work/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
netns = "host"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
cat >"$image_work/storage.conf" <<'CONF'
[storage]
driver = "overlay"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
CONF
export CONTAINERS_CONF="$image_work/containers.conf"
export CONTAINERS_STORAGE_CONF="$image_work/storage.conf"

image_exists() { podman image exists "$1"; }
