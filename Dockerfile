# Portcullis webhook image. Not built in CI (no container engine there); deploy/deployment.yaml
# expects it as portcullis:0.1.0.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin portcullis

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/portcullis /usr/local/bin/portcullis
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["serve"]
