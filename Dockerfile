# pgrunbook for Kubernetes CronJobs (deploy/kubernetes/) and one-off runs.
#   docker build -t pgrunbook .
#   docker run --rm -e PGHOST=db -e PGUSER=backup -e PGPASSWORD=... pgrunbook --procedure verify --yes --json
# Node 22 LTS, the PostgreSQL 15 client programs from Debian bookworm (pg_dump, pg_restore,
# pg_basebackup, psql; they serve PostgreSQL servers up to 15), pgrunbook and its production
# dependencies only. Runs as an unprivileged user; the journal goes to PGRUNBOOK_STATE_DIR,
# which the CronJobs mount from a PersistentVolumeClaim.

# --- build: compile TypeScript, then keep only the production dependencies ---
FROM node:22-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY src ./src
# `npm ci` runs the prepare script, which builds dist/ (TypeScript is a dev dependency).
RUN npm ci --no-audit --no-fund \
 && find dist -name '*.map' -delete && rm -f dist/.tsbuildinfo \
 && chmod 0755 dist/cli.js
# The same lock file, production dependencies only; no scripts (prepare would need TypeScript).
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

# --- runtime ---
# PG_MAJOR: the client programs' major; Debian bookworm packages 15 (pg_dump must not be older than the server).
FROM node:22-bookworm-slim
ARG PG_MAJOR=15
RUN apt-get update \
 && apt-get install -y --no-install-recommends "postgresql-client-${PG_MAJOR}" ca-certificates util-linux zstd \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 pgrunbook \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/pgrunbook --shell /usr/sbin/nologin pgrunbook \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/pgrunbook
WORKDIR /opt/pgrunbook
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY scripts/disaster-recovery ./scripts/disaster-recovery
COPY README.md LICENSE ./
RUN ln -s /opt/pgrunbook/dist/cli.js /usr/local/bin/pgrunbook \
 && pgrunbook --version
ENV NODE_ENV=production \
    PGRUNBOOK_STATE_DIR=/var/lib/pgrunbook
USER 10001:10001
ENTRYPOINT ["pgrunbook"]
CMD ["--list"]
