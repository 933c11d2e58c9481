# The kubeleash image: the CLI (`kubeleash proxy`, `kubeleash mcp`, ...) alone on an empty base,
# with the shared libraries it loads, running as the nonroot user 65532, and nothing else (no
# shell, no package manager), so the root filesystem can be mounted read-only.
#
#   docker build -t kubeleash .
#
# CI builds the same image without a Docker daemon (deploy/image/build.sh, with crane) and
# checks it; that script reads USER, ENTRYPOINT and the LABELs from this file, so they are
# stated here only. deploy/image/rootfs.sh lays out the files for both.

FROM rust:1.95-bookworm AS build
# The commit `kubeleash --version` names (.git is not in the build context).
ARG KUBELEASH_COMMIT=unknown
ENV KUBELEASH_COMMIT=${KUBELEASH_COMMIT}
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p kubeleash-cli \
    && deploy/image/rootfs.sh target/release/kubeleash /rootfs

FROM scratch
COPY --from=build /rootfs/ /
LABEL org.opencontainers.image.title="kubeleash"
LABEL org.opencontainers.image.description="Least privilege for AI agents on the Kubernetes API: a policy on every request, masking of secret material, a signed record"
LABEL org.opencontainers.image.licenses="Apache-2.0"
LABEL org.opencontainers.image.source="https://example.invalid/kubeleash"
USER 65532:65532
WORKDIR /
ENTRYPOINT ["/kubeleash"]
CMD ["--help"]
