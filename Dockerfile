# pgrunbook for Kubernetes CronJobs (deploy/kubernetes/) and one-off runs.
#   docker build -t pgrunbook .
#   docker run --rm -e PGHOST=db -e PGUSER=backup -e PGPASSWORD=... pgrunbook --procedure verify --yes --json
# Node 22 LTS, the PostgreSQL 15 client programs from Debian bookworm (pg_dump, pg_restore,
# pg_basebackup, psql; they serve PostgreSQL servers up to 15), pgrunbook and its production
# dependencies only. Runs as an unprivileged user; the journal goes to PGRUNBOOK_STATE_DIR,
# which the CronJobs mount from a PersistentVolumeClaim.
# Two images: the default target (`runtime`: client programs only, for every job but
# restore-test) and `restore-test` (the same plus the PostgreSQL server package, whose postgres,
# pg_ctl and pg_checksums run the scratch cluster):
#   docker build --target restore-test -t pgrunbook-restore-test .

# PG_MAJOR: the programs' major; Debian bookworm packages 15 (pg_dump must not be older than the server).
ARG PG_MAJOR=15

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

# --- runtime: the client programs ---
FROM node:22-bookworm-slim AS runtime
ARG PG_MAJOR
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

# --- restore-test: runtime plus the server programs (postgres, pg_ctl, pg_checksums) ---
# No cluster of the package's own (create_main_cluster = false): restore-test makes its scratch one.
FROM runtime AS restore-test
ARG PG_MAJOR
USER root
# (postgresql-common first, then its setting, then the server: the official postgres image's order.)
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-common \
 && sed -ri 's/^#?\s*(create_main_cluster)\s*=.*$/\1 = false/' /etc/postgresql-common/createcluster.conf \
 && grep -qx 'create_main_cluster = false' /etc/postgresql-common/createcluster.conf \
 && apt-get install -y --no-install-recommends "postgresql-${PG_MAJOR}" \
 && rm -rf /var/lib/apt/lists/* \
 && test -x "/usr/lib/postgresql/${PG_MAJOR}/bin/pg_checksums"
USER 10001:10001

# --- the default target (`docker build .`): the client-only image ---
FROM runtime
