# Multi-stage: build with the Rust toolchain, ship on distroless (glibc, CA certificates,
# no shell), as the non-root user 65532. Not built in this repository's CI (no Docker
# engine there); `docker build -t bitbucket-webhook-operator .` builds it.
FROM rust:1.95-bookworm AS build
# Cargo features, for example `--build-arg FEATURES=otel` for OpenTelemetry export.
ARG FEATURES=""
WORKDIR /src
COPY . .
RUN cargo build --release --locked --features "$FEATURES" --bin bitbucket-webhook-operator \
 && install -D target/release/bitbucket-webhook-operator /out/bitbucket-webhook-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/bitbucket-webhook-operator /bitbucket-webhook-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/bitbucket-webhook-operator"]
CMD ["run"]
