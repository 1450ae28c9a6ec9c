#!/usr/bin/env bash
# `make image`: builds the gateway, module and simulator images with podman, offline, from the
# top-level Dockerfile. The bases are local (scripts/image-bases.sh, reused when present) and
# the module and simulator are the host's release build (`make build`), staged stripped into
# target/image/artifacts/ and taken by the Dockerfile's `prebuilt` stage: here no registry,
# hence no Rust image for the `compiled` stage, is reachable.
source "$(dirname "$0")/image-env.sh"
started=$SECONDS
"$root/scripts/image-bases.sh"

artifacts="$image_work/artifacts"
rm -rf "$artifacts" && mkdir -p "$artifacts"
strip --strip-debug -o "$artifacts/libinference_scheduler.so" "$root/target/release/libinference_scheduler.so"
strip --strip-debug -o "$artifacts/inference-sim" "$root/target/release/inference-sim"

build() { # TARGET IMAGE
  podman build --pull=never --network host --layers -q \
    --build-arg ENVOY_IMAGE="$ENVOY_BASE_IMAGE" \
    --build-arg RUNTIME_IMAGE="$BASE_IMAGE" \
    --build-arg MODULE_BASE_IMAGE="$MODULE_BASE_IMAGE" \
    --build-arg ARTIFACTS=prebuilt \
    --target "$1" -t "$2" -f "$root/Dockerfile" "$root" >/dev/null
}
build gateway "$GATEWAY_IMAGE"
build module "$MODULE_IMAGE"
build simulator "$SIM_IMAGE"

echo "images built in $((SECONDS - started)) s (bases included when they were missing):"
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep "^$IMAGE_REPO/" | sort
