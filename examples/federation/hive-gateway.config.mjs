// Hive Gateway's configuration for userql and the projects subgraph, run as
//   hive-gateway supergraph -c hive-gateway.config.mjs \
//     --dev-service users=$USERQL_URL --dev-service projects=$PROJECTS_URL
// which composes the supergraph locally from each subgraph's `_service { sdl }`.
//
// JWT_SECRET: userql's (HS256), so that the gateway verifies the caller's token itself and
// enforces userql's @authenticated and @requiresScopes at the edge, with the token's `roles`
// claim as its scopes; the token is forwarded, and userql decides the rest (who is "self").
// MAX_COST: demand control's limit, userql's QUERY_MAX_COST (2000 unless set). Every answer
// carries the estimate in extensions.cost, to compare with userql's own.
import {
  createInlineSigningKeyProvider,
  defineConfig,
  extractFromHeader,
} from "@graphql-hive/gateway";

export const gatewayConfig = defineConfig({
  jwt: {
    signingKeyProviders: [createInlineSigningKeyProvider(process.env.JWT_SECRET)],
    tokenLookupLocations: [extractFromHeader({ name: "authorization", prefix: "Bearer" })],
    tokenVerification: { algorithms: ["HS256"], issuer: "userql", audience: "userql" },
    // A caller without a token may still use what needs none (`me`, signing in).
    reject: { missingToken: false, invalidToken: true },
  },
  genericAuth: {
    mode: "protect-granular",
    resolveUserFn: (context) => context.jwt?.payload,
    extractScopes: (claims) => claims?.roles ?? [],
    rejectUnauthenticated: false,
  },
  demandControl: {
    maxCost: Number(process.env.MAX_COST ?? 2000),
    includeExtensionMetadata: true,
  },
  propagateHeaders: {
    fromClientToSubgraphs: ({ request }) => {
      const authorization = request.headers.get("authorization");
      return authorization ? { authorization } : {};
    },
  },
});
