# NAT router image: just the tools natlab/router.sh needs.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends nftables iproute2 conntrack procps mawk \
    && rm -rf /var/lib/apt/lists/*
# The same script the netns lab runs (compose also bind-mounts it read-only
# so edits take effect without a rebuild).
COPY natlab/router.sh /natlab/router.sh
COPY docker/router-entrypoint.sh /natlab/router-entrypoint.sh
CMD ["sh", "/natlab/router-entrypoint.sh", "/natlab/router.sh", "setup"]
