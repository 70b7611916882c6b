# The Portcullis webhook image: the one binary on a distroless base, non-root, no shell.
#
# Not built by CI or on the machines that develop Portcullis: they have no container engine and
# reach no image registry. So this file is checked by reading it, and the digests below were not
# pulled here: they are the ones public Dockerfiles and build logs pin for these tags. Check them
# before the first build (`docker buildx imagetools inspect rust:1.95-bookworm`, and the same for
# the runtime), and refresh them the same way.
#
#   docker build -t portcullis:0.1.0 .      # what deploy/base/deployment.yaml runs

# Build: the toolchain the crate pins (rust-version 1.95), Debian 12 like the runtime, so the
# binary links against the same glibc.
FROM rust:1.95-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1 AS build
WORKDIR /src
COPY . .
# The policy modules and policies/default.yaml are embedded at compile time (src/config/builtin.rs),
# so the image needs no other file.
RUN cargo build --release --locked --bin portcullis \
 && strip target/release/portcullis

# Run: distroless "cc" is glibc plus libgcc_s, exactly what the binary links dynamically (ldd:
# libgcc_s.so.1, libm.so.6, libc.so.6; rustls needs no OpenSSL), with no shell or package manager.
# The nonroot variant's user is 65532, the Deployment's runAsUser and fsGroup.
FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
COPY --from=build /src/target/release/portcullis /usr/local/bin/portcullis
USER 65532:65532
# HTTPS for the API server; plain-HTTP metrics.
EXPOSE 8443 9090
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["serve"]
