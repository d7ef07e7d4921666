// Apollo Gateway composing userql with the projects subgraph in process (@apollo/composition:
// no rover, no registry), on Apollo Server, forwarding each client's Authorization header to
// every subgraph.
//
// Apollo Gateway, unlike Apollo Router, cannot enforce @authenticated and @requiresScopes, and
// refuses a supergraph that links them. So this gateway composes userql's SDL without those two
// and leaves them to userql, which applies the same rules itself; @cost and @listSize stay.
//
// USERQL_URL, PROJECTS_URL: the subgraphs' GraphQL endpoints.
// PORT: where to listen on 127.0.0.1 (0, the default: any free port). Prints {"url": ...}.
import { composeServices } from "@apollo/composition";
import { ApolloGateway, RemoteGraphQLDataSource } from "@apollo/gateway";
import { ApolloServer } from "@apollo/server";
import { startStandaloneServer } from "@apollo/server/standalone";
import { Kind, parse, visit } from "graphql";

// The gateway otherwise reports usage data to Apollo ("fleet" telemetry).
process.env.APOLLO_TELEMETRY_DISABLED = "true";

const UNENFORCEABLE = new Set(["authenticated", "requiresScopes"]);

async function subgraphSdl(url) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ query: "{ _service { sdl } }" }),
  });
  const body = await response.json();
  if (!body.data) throw new Error(`${url}: ${JSON.stringify(body.errors)}`);
  return body.data._service.sdl;
}

function withoutUnenforceable(typeDefs) {
  return visit(typeDefs, {
    Directive(node) {
      if (UNENFORCEABLE.has(node.name.value)) return null;
      if (node.name.value !== "link") return undefined;
      return visit(node, {
        ListValue(list) {
          const values = list.values.filter(
            (value) => !(value.kind === Kind.STRING && UNENFORCEABLE.has(value.value.slice(1))),
          );
          return { ...list, values };
        },
      });
    },
  });
}

const services = [
  { name: "users", url: process.env.USERQL_URL },
  { name: "projects", url: process.env.PROJECTS_URL },
];
const composed = composeServices(
  await Promise.all(
    services.map(async ({ name, url }) => ({
      name,
      url,
      typeDefs: withoutUnenforceable(parse(await subgraphSdl(url))),
    })),
  ),
);
if (composed.errors) {
  throw new Error(composed.errors.map(String).join("\n"));
}

class ForwardAuthorization extends RemoteGraphQLDataSource {
  willSendRequest({ request, context }) {
    if (context.authorization) {
      request.http.headers.set("authorization", context.authorization);
    }
  }
}

const gateway = new ApolloGateway({
  supergraphSdl: composed.supergraphSdl,
  buildService: ({ url }) => new ForwardAuthorization({ url }),
});

const server = new ApolloServer({ gateway });
const { url } = await startStandaloneServer(server, {
  listen: { host: "127.0.0.1", port: Number(process.env.PORT ?? 0) },
  context: async ({ req }) => ({ authorization: req.headers.authorization }),
});
console.log(JSON.stringify({ url }));
