# parity container image.
#
#   docker build -t parity .
#   docker run -d --name parity --stop-timeout 90 \
#     -v parity-data:/var/lib/parity -p 127.0.0.1:9464:9464 parity
#
# Two stages:
#   build    the Rust toolchain. Dependencies are compiled in a layer of
#            their own, from Cargo.toml and Cargo.lock alone, so editing
#            src/ rebuilds only the crate. Both builds go through
#            scripts/build, the script the test suite (and so CI) builds with.
#   runtime  Debian slim with CA certificates, a non-root user, and the
#            binary as PID 1 (it handles SIGTERM itself: commits the open
#            batch, exits 0).

# The toolchain CI uses; Cargo.toml's rust-version is the minimum.
ARG RUST_VERSION=1.95
# The build and runtime stages must share a Debian release (glibc).
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src

# Dependency layer: the manifests, the build script and empty targets (every
# [[bench]] and [[test]] declared in Cargo.toml must have its file, and the
# workspace's dev-only test-network crate its manifest and lib; that crate is
# never built here, only resolved). The stub crate's own artifacts are then
# cleaned so the real sources always recompile, whatever their timestamps.
COPY Cargo.toml Cargo.lock ./
COPY crates/testnet/Cargo.toml crates/testnet/Cargo.toml
COPY scripts/build scripts/build
RUN mkdir -p src benches crates/testnet/src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs crates/testnet/src/lib.rs \
 && for b in $(awk '/^\[\[bench\]\]/ {b = 1; next} b && /^name/ {gsub(/"/, "", $3); print $3; b = 0}' Cargo.toml); do \
      echo 'fn main() {}' > "benches/$b.rs"; \
    done \
 && for t in $(awk '/^\[\[test\]\]/ {t = 1; next} t && /^path/ {gsub(/"/, "", $3); print $3; t = 0}' Cargo.toml); do \
      mkdir -p "$(dirname "$t")" && echo 'fn main() {}' > "$t"; \
    done \
 && scripts/build --release \
 && cargo clean --release --locked --package parity

# The crate: sources plus what the compiler embeds (migrations via
# sqlx::migrate!, the Jetstream v1 zstd dictionary and the example config
# via include_bytes!/include_str!, the change feed's demo page in
# examples/feed; tests/it/deploy.rs checks this list).
COPY src src
COPY migrations migrations
COPY assets assets
COPY config config
COPY examples examples
# Release builds keep line tables (Cargo.toml) so panics and profiles name
# file:line. Compressing those sections shrinks the binary about threefold
# (89 to 33 MB) and backtraces still read them.
RUN scripts/build --release \
 && objcopy --compress-debug-sections=zlib target/release/parity /usr/local/bin/parity


FROM debian:${DEBIAN_RELEASE}-slim AS runtime

# Set by the release pipeline, e.g.
#   docker build --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) .
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="parity" \
      org.opencontainers.image.description="Keeps a SQL database (SQLite or PostgreSQL) in sync with the AT Protocol network." \
      org.opencontainers.image.licenses="MIT OR Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

# ca-certificates: the Jetstream v2 dictionary download verifies TLS against
# the system store. sqlite3: to back up the SQLite file safely while parity
# runs (`docker exec parity sqlite3 parity.db ".backup backup.db"`).
# The user has a fixed UID/GID so volume and bind-mount ownership is stable.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates sqlite3 \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 parity \
 && useradd --system --uid 10001 --gid parity --home-dir /var/lib/parity \
      --no-create-home --shell /usr/sbin/nologin parity \
 && install -d -o parity -g parity -m 0700 /var/lib/parity

COPY --from=build /usr/local/bin/parity /usr/local/bin/parity

# The SQLite file and the Jetstream v2 dictionary cache (source.cache_dir,
# relative to the working directory) live on the volume. With PostgreSQL,
# set PARITY_DATABASE_URL=postgres://… instead. Metrics and health listen on
# all interfaces so the port can be published.
ENV PARITY_DATABASE_URL=sqlite:///var/lib/parity/parity.db \
    PARITY_METRICS_ADDR=0.0.0.0:9464
WORKDIR /var/lib/parity
VOLUME ["/var/lib/parity"]
EXPOSE 9464

USER 10001:10001
# SIGTERM drains: the open batch is committed before exit. Give it time
# (docker run --stop-timeout 90, compose stop_grace_period: 90s); Docker's
# default of 10 s then SIGKILL loses nothing but replays the batch.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/parity", "health", "--url", "http://127.0.0.1:9464/health"]

# Smoke test: the binary starts in this image (libraries, user).
RUN ["/usr/local/bin/parity", "--version"]

ENTRYPOINT ["parity"]
CMD ["consume"]
