# The harpbridge image: one image for every role.
#
#   docker build -t ghcr.io/harpbridge/harpbridge:0.1.0 .      (the image appinfo/info.xml names)
#
# With no command the container runs `harpbridge serve`, the Nextcloud ExApp that AppAPI
# deploys (behind HaRP, through the FRP client started by deploy/start.sh). Given a command
# it runs that harpbridge subcommand instead: `cache` or `node` for an office without
# Nextcloud (see docker-compose.yml), `id`, `peers list`, …
#
# Stages (the classic builder builds every stage up to --target, so runtime comes first):
#   runtime   Debian slim, root user, CA store, bash curl procps, frpc, entrypoint
#   builder   compiles the release binary with --locked
#   (last)    runtime + the builder's binary: the default target
# deploy/check-image.sh builds `--target runtime` and adds a prebuilt binary with
# deploy/Dockerfile.prebuilt, so that it needs no Rust image.
#
# Build arguments:
#   DEBIAN_SUITE   bookworm  (builder and runtime share it, so glibc matches)
#   RUNTIME_BASE   debian:$DEBIAN_SUITE-slim
#   RUST_VERSION   1.95      the toolchain harpbridge is built and tested with; the locked
#                            dependency tree needs at least 1.90 (redb 4.6)
#   INSTALL_FRPC   true      false skips the frpc download (for builds without internet
#                            access to GitHub; such an image cannot run under HaRP)

ARG DEBIAN_SUITE=bookworm
ARG RUST_VERSION=1.95
ARG RUNTIME_BASE=debian:${DEBIAN_SUITE}-slim

FROM ${RUNTIME_BASE} AS runtime

# AppAPI copies Nextcloud's CA bundle into the container and runs update-ca-certificates
# through `docker exec` (appapi.md §4), so: a Debian base, the root user, ca-certificates.
# bash runs the entrypoint, curl and procps (pgrep) the healthcheck.
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates bash curl procps; \
    update-ca-certificates; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/*

# HaRP's FRP client, official frp 0.61.1 release, checked against the SHA-256 sums that
# Nextcloud pins for ExApp images (nextcloud/HaRP README, "adapting an ExApp to Nextcloud 32").
ARG INSTALL_FRPC=true
ARG FRP_VERSION=0.61.1
ARG FRP_AMD64_SHA256=bff260b68ca7b1461182a46c4f34e9709ba32764eed30a15dd94ac97f50a2c40
ARG FRP_ARM64_SHA256=af6366f2b43920ebfe6235dba6060770399ed1fb18601e5818552bd46a7621f8
RUN set -eu; \
    if [ "$INSTALL_FRPC" != true ]; then \
        echo "INSTALL_FRPC=$INSTALL_FRPC: no frpc in this image (it cannot run under HaRP)"; \
        exit 0; \
    fi; \
    case "$(uname -m)" in \
        x86_64) FRP_ARCH=amd64; FRP_SHA256="$FRP_AMD64_SHA256" ;; \
        aarch64) FRP_ARCH=arm64; FRP_SHA256="$FRP_ARM64_SHA256" ;; \
        *) echo "no pinned frp checksum for $(uname -m)" >&2; exit 1 ;; \
    esac; \
    curl -fsSL --retry 3 -o /tmp/frp.tar.gz \
        "https://github.com/fatedier/frp/releases/download/v${FRP_VERSION}/frp_${FRP_VERSION}_linux_${FRP_ARCH}.tar.gz"; \
    echo "${FRP_SHA256}  /tmp/frp.tar.gz" | sha256sum -c -; \
    tar -C /tmp -xzf /tmp/frp.tar.gz "frp_${FRP_VERSION}_linux_${FRP_ARCH}/frpc"; \
    install -m 0755 "/tmp/frp_${FRP_VERSION}_linux_${FRP_ARCH}/frpc" /usr/local/bin/frpc; \
    rm -rf /tmp/frp.tar.gz "/tmp/frp_${FRP_VERSION}_linux_${FRP_ARCH}"; \
    frpc --version

COPY deploy/start.sh deploy/healthcheck.sh /
RUN chmod 0755 /start.sh /healthcheck.sh

# AppAPI mounts the volume nc_app_harpbridge_data here and sets APP_PERSISTENT_STORAGE to
# it; the default lets `cache` and `node` use the same place without a --data-dir.
ENV APP_PERSISTENT_STORAGE=/nc_app_harpbridge_data
VOLUME ["/nc_app_harpbridge_data"]

# The swarm: TCP and QUIC on 4001 (HARPBRIDGE_P2P_PORT). The ExApp's own HTTP port is
# chosen by AppAPI (APP_PORT, 23000–23999) and, under HaRP, is reached through frpc only.
EXPOSE 4001/tcp 4001/udp

# As the app-skeleton: probe every 2 s, give a slow first start 10 min (300 tries).
HEALTHCHECK --interval=2s --timeout=3s --retries=300 CMD ["/healthcheck.sh"]

ENTRYPOINT ["/start.sh"]
CMD ["serve"]

# --- the release build ---
FROM rust:${RUST_VERSION}-${DEBIAN_SUITE} AS builder
# aws-lc-sys (rustls' crypto) builds its C code with cmake when present; install it so the
# build does not depend on which fallback the crate picks.
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends cmake; \
    rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The release profile keeps line tables for the developers' benchmarks; the image does
# not need them (about 140 MB → a fraction of it).
RUN CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=debuginfo \
    cargo build --release --locked --bin harpbridge \
    && install -m 0755 target/release/harpbridge /usr/local/bin/harpbridge \
    && rm -rf target

# --- the image AppAPI deploys ---
FROM runtime
COPY --from=builder /usr/local/bin/harpbridge /usr/local/bin/harpbridge
