// Apollo Client (Node) talking to userql with Automatic Persisted Queries: the first request
// sends only the query's SHA-256 (as a cacheable GET), userql answers PersistedQueryNotFound,
// Apollo retries with the full query, and from then on the hash alone is enough.
//
//   USERQL_URL=http://127.0.0.1:8000/graphql \
//   USERQL_TOKEN=$(../../.venv/bin/userql issue-token --email ada@example.com) \
//   node persisted-queries.mjs
import { createHash } from 'node:crypto';
import { ApolloClient, HttpLink, InMemoryCache, gql } from '@apollo/client';
import { PersistedQueryLink } from '@apollo/client/link/persisted-queries';

const url = process.env.USERQL_URL ?? 'http://127.0.0.1:8000/graphql';
const token = process.env.USERQL_TOKEN;
const exchanges = [];

// Records what went over the wire, to show the miss and the hit.
async function recordingFetch(input, init = {}) {
  const response = await fetch(input, init);
  const sent = init.body ? JSON.parse(init.body) : Object.fromEntries(new URL(input).searchParams);
  const answer = await response.clone().json();
  exchanges.push({
    method: init.method ?? 'GET',
    sentFullQuery: typeof sent.query === 'string',
    status: response.status,
    errors: (answer.errors ?? []).map((error) => error.extensions?.code),
  });
  return response;
}

const persisted = new PersistedQueryLink({
  sha256: (query) => createHash('sha256').update(query).digest('hex'),
  useGETForHashedQueries: true,
});
const http = new HttpLink({
  uri: url,
  fetch: recordingFetch,
  headers: token ? { Authorization: `Bearer ${token}` } : {},
});
const client = new ApolloClient({ link: persisted.concat(http), cache: new InMemoryCache() });

const USERS = gql`
  query FirstUsers {
    users(first: 3) {
      totalCount
      edges { node { id name } }
    }
  }
`;
const first = await client.query({ query: USERS, fetchPolicy: 'network-only' });
const second = await client.query({ query: USERS, fetchPolicy: 'network-only' });
console.log(JSON.stringify({ exchanges, first: first.data, second: second.data }, null, 2));
