# syntax=docker/dockerfile:1
# kawal as a container sidecar.
#   docker build -t kawal .
#   docker run -v $PWD/my.toml:/etc/kawal/kawal.toml:ro kawal
# The image runs `kawal --config /etc/kawal/kawal.toml` as a non-root user;
# mount your config (and its certificates) there. Without a mount it runs
# docker/kawal.toml: a plaintext inbound on :15006 to an app on 127.0.0.1:8080.

# --- build: profile-guided (docker/pgo-build.sh, the script bench/pgo.sh
# runs too): an instrumented build trained on loopback with the repository's
# own load generator (examples/soak.rs), then the release build with that
# profile. Nothing downloaded but crates and Debian packages (llvm-profdata of
# rustc's LLVM major, openssl for the training's certificates).
FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src
COPY docker/pgo-build.sh docker/certs.sh ./docker/
RUN docker/pgo-build.sh --install
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY examples/soak.rs ./examples/
# The cached target dir keeps the instrumented build and the load generator;
# the script empties the profile-use build's dir and the profiles each time.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    bin=$(docker/pgo-build.sh) && cp "$bin" /kawal

# --- run: glibc and libgcc only, no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=builder /kawal /usr/local/bin/kawal
COPY docker/kawal.toml /etc/kawal/kawal.toml
# distroless's "nonroot" user (uid 65532).
USER 65532:65532
# inbound (from other services), outbound (the app's calls), admin
EXPOSE 15006 15001 15000
# No curl in this image: kawal probes its own admin port.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/kawal", "probe", "http://127.0.0.1:15000/ready"]
ENTRYPOINT ["/usr/local/bin/kawal", "--config", "/etc/kawal/kawal.toml"]
