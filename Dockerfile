# syntax=docker/dockerfile:1

# syncgate image: built from the lockfile, dev dependencies pruned, run as the
# unprivileged `node` user (uid 1000, the uid the Helm chart runs as).
ARG NODE_VERSION=20

FROM node:${NODE_VERSION}-bookworm-slim AS build
WORKDIR /app
# Manifests first so the dependency layer is reused while only sources change.
COPY package.json package-lock.json ./
# Install scripts must run: matrix-bot-sdk loads @matrix-org/matrix-sdk-crypto-nodejs at import time,
# whose postinstall fetches the native library for this platform (glibc, hence bookworm and not alpine).
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY adapters ./adapters
# npm run build also copies the Lua scripts next to the compiled event log that loads them.
RUN npm run build \
 && npm prune --omit=dev --no-audit --no-fund

FROM node:${NODE_VERSION}-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
# Owned by root and read-only to the runtime user: the app never writes its own code.
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# Numeric, so the kubelet can verify runAsNonRoot without resolving a name.
USER 1000:1000
EXPOSE 8080
# node as PID 1 is fine here: the gateway installs its own SIGTERM/SIGINT handlers for graceful shutdown.
ENTRYPOINT ["node", "dist/src/cli/main.js"]
CMD ["serve", "--config", "/etc/syncgate/config.yaml"]
