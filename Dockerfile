# syntax=docker/dockerfile:1
#
# podgate container image.
#
#   docker build -t podgate:0.1.0 .
#
# Build stage: the same `cargo build --release --locked` as on a developer's
# machine, on Debian bookworm.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin podgate \
 && install -D -m 0755 target/release/podgate /out/podgate

# Run stage: distroless "cc", not "static". The binary is an ordinary
# glibc-linked Rust build (it needs libc.so.6, libm.so.6 and libgcc_s.so.1 and nothing
# else: rustls/ring, no OpenSSL); distroless/cc-debian12 carries exactly
# those, from the same Debian release as the build stage, plus CA
# certificates and /etc/passwd, and no shell or package manager. A static
# image would need a musl build, i.e. a different binary (and allocator) from
# the one `cargo build --release` produces and the tests exercise.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/podgate /usr/local/bin/podgate
# 65532 is "nonroot" in distroless; numeric so that runAsNonRoot can verify it.
USER 65532:65532
# 8443: HTTPS POST /validate. 9090: plain HTTP /metrics, /healthz, /readyz.
EXPOSE 8443 9090
ENTRYPOINT ["/usr/local/bin/podgate"]
# The chart's arguments: certificate and policy mounted at /certs and /config.
CMD ["serve", "--listen=0.0.0.0:8443", "--metrics-listen=0.0.0.0:9090", \
     "--tls-cert=/certs/tls.crt", "--tls-key=/certs/tls.key", \
     "--config=/config/policy.yaml", "--log-format=json", \
     "--shutdown-delay=5s", "--shutdown-grace=10s", \
     "--idle-timeout=120s", "--header-read-timeout=5s", \
     "--max-buffered-bytes=33554432"]
