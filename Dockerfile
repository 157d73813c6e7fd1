# Multi-stage build: compile with the Rust toolchain, run on a slim Debian as a non-root user.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The image needs no debug info (the repository's release profile keeps line tables for
# profiling): a ~20 MB binary instead of ~130 MB; symbol names stay for panic backtraces.
ENV CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=debuginfo
RUN cargo build --release --locked --bin approval-gate

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/approval-gate approval-gate \
 && mkdir -p /var/lib/approval-gate /etc/approval-gate \
 && chown approval-gate:approval-gate /var/lib/approval-gate
COPY --from=build /src/target/release/approval-gate /usr/local/bin/approval-gate
COPY config /etc/approval-gate
ENV APPROVAL_GATE_ENV=production \
    APPROVAL_GATE_CONFIG_DIR=/etc/approval-gate \
    APPROVAL_GATE__SERVER__BIND=0.0.0.0:5284 \
    MIMALLOC_ARENA_EAGER_COMMIT=0
# The sled store and the notifications file live here; mount a volume to keep them.
VOLUME ["/var/lib/approval-gate"]
USER approval-gate
EXPOSE 5284
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS http://127.0.0.1:5284/health/live || exit 1
# A non-loopback bind needs tokens, e.g.
#   docker run -e APPROVAL_GATE__AUTH__AGENT_TOKENS__CLAUDE=... -e APPROVAL_GATE__AUTH__OPERATOR_TOKENS__ALICE=... 
ENTRYPOINT ["/usr/local/bin/approval-gate"]
CMD ["serve"]
