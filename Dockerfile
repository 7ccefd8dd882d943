# nodedns image: a static (musl) binary on Alpine, which adds only the network tools node
# setup runs (`ip`, `iptables`/`ip6tables`, `nft`). About 15 MB.
#   docker build -t nodedns .
FROM rust:1-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
# The commit built, for coredns_build_info's revision label:
#   docker build --build-arg NODEDNS_REVISION=$(git rev-parse --short HEAD) -t nodedns .
ARG NODEDNS_REVISION=unknown
COPY . .
RUN cargo build --release --locked --bin nodedns && strip target/release/nodedns

FROM alpine:3.20
RUN apk add --no-cache iproute2 iptables ip6tables nftables
COPY --from=build /src/target/release/nodedns /usr/local/bin/nodedns
# Capabilities come from the pod spec (NET_ADMIN, NET_BIND_SERVICE); nothing else is needed.
ENTRYPOINT ["/usr/local/bin/nodedns"]
CMD ["run"]
