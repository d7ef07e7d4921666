// Apollo Client (Node) sending a mutation with an Idempotency-Key, then sending it again as a
// client would after a lost answer: userql runs it once and replays the first answer.
//
//   USERQL_URL=http://127.0.0.1:8000/graphql \
//   USERQL_TOKEN=$(../../.venv/bin/userql issue-token --email ada@example.com) \
//   node idempotent-mutation.mjs
import { randomUUID } from 'node:crypto';
import { ApolloClient, ApolloLink, HttpLink, InMemoryCache, gql } from '@apollo/client';

const url = process.env.USERQL_URL ?? 'http://127.0.0.1:8000/graphql';
const token = process.env.USERQL_TOKEN;
const replayed = [];

// Puts the operation's key (from its context) on the request: one key per logical change,
// the same for each of its retries.
const idempotency = new ApolloLink((operation, forward) => {
  const key = operation.getContext().idempotencyKey;
  if (key) {
    operation.setContext(({ headers = {} }) => ({ headers: { ...headers, 'Idempotency-Key': key } }));
  }
  return forward(operation);
});

async function recordingFetch(input, init = {}) {
  const response = await fetch(input, init);
  replayed.push(response.headers.get('Idempotent-Replayed') === 'true');
  return response;
}

const http = new HttpLink({
  uri: url,
  fetch: recordingFetch,
  headers: token ? { Authorization: `Bearer ${token}` } : {},
});
const client = new ApolloClient({ link: idempotency.concat(http), cache: new InMemoryCache() });

const CREATE = gql`
  mutation Create($input: CreateUserInput!) {
    createUser(input: $input) { __typename ... on CreateUserSuccess { user { id email } } }
  }
`;
const key = randomUUID();
const variables = { input: { name: 'Retried Once', email: `retry-${key}@example.com` } };
const send = () => client.mutate({ mutation: CREATE, variables, context: { idempotencyKey: key } });
const first = await send();
const retry = await send();
console.log(JSON.stringify({ replayed, first: first.data, retry: retry.data }, null, 2));
