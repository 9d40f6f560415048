# syntax=docker/dockerfile:1

# syncgate image: built from the lockfile, dev dependencies pruned, run as the
# unprivileged `node` user (uid 1000, the uid the Helm chart runs as).
#
#   docker build -t syncgate:0.1.0 --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) .
#
# Node 26 is the Active LTS line (Node 20 reached its end of life in April 2026);
# the Debian 13 (trixie) variant, since the node images of 26 are built on it.
# NODE_VERSION must lie inside package.json's engines range (test/unit/engines.test.ts checks it).
ARG NODE_VERSION=26
ARG DEBIAN=trixie

FROM node:${NODE_VERSION}-${DEBIAN}-slim AS build
WORKDIR /app
# Manifests first so the dependency layer is reused while only sources change.
COPY package.json package-lock.json ./
# The Matrix end-to-end encryption is @matrix-org/matrix-sdk-crypto-wasm, shipped inside its npm
# package: nothing is downloaded at install. (matrix-bot-sdk and its native crypto binding are dev
# dependencies for the tests only, pruned below.)
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY adapters ./adapters
# the operator console: bundled into dist/console by npm run build
COPY console ./console
COPY scripts/build-console.mjs ./scripts/build-console.mjs
# npm run build also copies the Lua scripts next to the compiled event log that loads them.
# WITH_OMEMO=true adds the GPL-3.0 Signal library the XMPP adapter's OMEMO device needs (README,
# "Encrypted XMPP chats"); without it the image holds Apache-2.0-compatible code only.
ARG WITH_OMEMO=false
RUN npm run build \
 && npm prune --omit=dev --no-audit --no-fund \
 && if [ "$WITH_OMEMO" = "true" ]; then \
      npm install --no-save --omit=dev --no-audit --no-fund \
        "@privacyresearch/libsignal-protocol-typescript@$(node -p 'require("./package.json").devDependencies["@privacyresearch/libsignal-protocol-typescript"]')"; \
    fi

FROM node:${NODE_VERSION}-${DEBIAN}-slim AS runtime
# with WITH_OMEMO=true, pass LICENSES="Apache-2.0 AND GPL-3.0-only" too, so the label tells the truth
ARG LICENSES=Apache-2.0
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="syncgate" \
      org.opencontainers.image.description="Multi-protocol sync gateway: XMPP, Matrix and MQTT bridged through one event log, with a cursor-based sync API" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="${LICENSES}" \
      org.opencontainers.image.base.name="node:${NODE_VERSION}-${DEBIAN}-slim"
ENV NODE_ENV=production
# In a container the API must be reachable from outside it: listen on every interface
# (outside a container the default stays 127.0.0.1). SYNCGATE_HTTP_HOST / http.host override it.
ENV SYNCGATE_HTTP_HOST=0.0.0.0
WORKDIR /app
# Owned by root and read-only to the runtime user: the app never writes its own code.
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# Numeric, so the kubelet can verify runAsNonRoot without resolving a name.
USER 1000:1000
EXPOSE 8080
# Liveness from inside the container (the Helm chart uses its own probes): GET /healthz on the configured port.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.SYNCGATE_HTTP_PORT || 8080) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# node as PID 1 is fine here: the gateway installs its own SIGTERM/SIGINT handlers for graceful shutdown.
ENTRYPOINT ["node", "dist/src/cli/main.js"]
CMD ["serve", "--config", "/etc/syncgate/config.yaml"]
