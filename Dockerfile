# The operator image the Helm chart runs (values: image.repository, image.tag
# = the chart's appVersion). Build: docker build -t ghcr.io/byoc-dev/byoc-operator:0.1.0 .
FROM docker.io/library/rust:1.95-bookworm AS build
# aws-lc-rs (the TLS crypto provider) compiles C: cmake and clang.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake clang \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin byoc-operator \
 && cp target/release/byoc-operator /byoc-operator

# glibc and CA certificates, no shell, runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /byoc-operator /usr/local/bin/byoc-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/byoc-operator"]
CMD ["run"]
