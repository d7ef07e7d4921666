// Hive Gateway's configuration for userql and the projects subgraph, run as
//   hive-gateway supergraph -c hive-gateway.config.mjs \
//     --dev-service users=$USERQL_URL --dev-service projects=$PROJECTS_URL
// which composes the supergraph locally from each subgraph's `_service { sdl }`.
//
// MAX_COST: demand control's limit, userql's QUERY_MAX_COST (2000 unless set). Every answer
// carries the estimate in extensions.cost, to compare with userql's own.
import { defineConfig } from "@graphql-hive/gateway";

export const gatewayConfig = defineConfig({
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
