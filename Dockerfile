# syntax=docker/dockerfile:1
# Multi-stage build: compile in the Rust image, run in a slim Debian image as
# a non-root user. TLS roots are bundled in the binary and SQLite is compiled
# in, so the runtime image needs no extra packages.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin safedelete \
    && cp target/release/safedelete /usr/local/bin/safedelete

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/safedelete safedelete \
    && mkdir -p /var/lib/safedelete/data \
    && chown -R safedelete:safedelete /var/lib/safedelete
COPY --from=build /usr/local/bin/safedelete /usr/local/bin/safedelete
USER safedelete:safedelete
WORKDIR /var/lib/safedelete
# Config: commands read config/safedelete.toml relative to this directory, so
# mount a directory holding it on /var/lib/safedelete/config (the README's
# Docker section). Clients reach the proxy from outside the container; the
# admin listener stays on loopback inside it, where the health check below asks
# it (SAFEDELETE_ADMIN_LISTEN=0.0.0.0:8081 plus SAFEDELETE_ADMIN_TOKEN opens it).
# The store is the SQLite file below; several gateways share a PostgreSQL
# database instead with SAFEDELETE_DATABASE=postgres://... (the data volume
# then goes unused): deploy/two-gateways/compose.yaml.
ENV SAFEDELETE_LISTEN=0.0.0.0:8080 \
    SAFEDELETE_DATABASE=/var/lib/safedelete/data/safedelete.db \
    SAFEDELETE_LOG_FORMAT=json
EXPOSE 8080
VOLUME ["/var/lib/safedelete/data"]
HEALTHCHECK --interval=15s --timeout=6s --start-period=5s --retries=3 \
    CMD ["safedelete", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["safedelete"]
CMD ["serve"]
