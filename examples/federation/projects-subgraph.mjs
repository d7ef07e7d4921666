// A second subgraph, in the way most teams write one: @apollo/subgraph on Apollo Server. It
// extends userql's User with `projects`, and names each project's owner by key only, so the
// gateway asks userql's `_entities` for every owner's fields.
//
// PROJECT_OWNERS: the userql ids that own projects, comma-separated; each owns two.
// PORT: where to listen on 127.0.0.1 (0, the default: any free port). Prints {"url": ...}.
import { ApolloServer } from "@apollo/server";
import { startStandaloneServer } from "@apollo/server/standalone";
import { buildSubgraphSchema } from "@apollo/subgraph";
import { parse } from "graphql";

const typeDefs = parse(`
  extend schema @link(url: "https://specs.apollo.dev/federation/v2.9", import: ["@key", "@cost"])

  type Query {
    "Every project, in id order."
    projects: [Project!]!
  }

  type Project @key(fields: "id") {
    id: ID!
    name: String! @cost(weight: 1)
    owner: User!
  }

  type User @key(fields: "id") {
    id: ID!
    "The projects this user owns."
    projects: [Project!]!
  }
`);

const owners = (process.env.PROJECT_OWNERS ?? "").split(",").filter(Boolean);
const projects = owners.flatMap((owner, index) => [
  { id: String(2 * index + 1), name: `Apollo ${owner}`, ownerId: owner },
  { id: String(2 * index + 2), name: `Gemini ${owner}`, ownerId: owner },
]);

const resolvers = {
  Query: { projects: () => projects },
  Project: {
    __resolveReference: ({ id }) => projects.find((project) => project.id === id) ?? null,
    owner: (project) => ({ __typename: "User", id: project.ownerId }),
  },
  User: {
    projects: (user) => projects.filter((project) => project.ownerId === user.id),
  },
};

const server = new ApolloServer({ schema: buildSubgraphSchema([{ typeDefs, resolvers }]) });
const { url } = await startStandaloneServer(server, {
  listen: { host: "127.0.0.1", port: Number(process.env.PORT ?? 0) },
});
console.log(JSON.stringify({ url }));
