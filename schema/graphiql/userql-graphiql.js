// Starts GraphiQL against this server, and in development offers a role switcher that
// fetches a short-lived token for the chosen role. No inline script: the page's CSP allows
// only files from this origin.
(function () {
  'use strict';

  const body = document.body;
  const endpoint = body.dataset.endpoint;
  const tokenUrl = body.dataset.tokenUrl;
  const select = document.getElementById('userql-role-select');
  const status = document.getElementById('userql-role-status');
  let current = { role: '', token: null, expiresAt: 0 };

  async function tokenFor(role) {
    // Refresh a minute before expiry, so a request never leaves with a dead token.
    if (current.role === role && current.token && current.expiresAt - Date.now() > 60000) {
      return current.token;
    }
    const response = await fetch(tokenUrl, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ role: role }),
    });
    if (!response.ok) {
      throw new Error('could not get a development token (HTTP ' + response.status + ')');
    }
    const issued = await response.json();
    current = { role: role, token: issued.token, expiresAt: Date.parse(issued.expiresAt) };
    status.textContent = issued.email + ' until ' + new Date(issued.expiresAt).toLocaleTimeString();
    return issued.token;
  }

  const baseFetcher = GraphiQL.createFetcher({ url: endpoint });

  async function fetcher(params, options) {
    const headers = Object.assign({}, (options && options.headers) || {});
    const role = select.value;
    if (tokenUrl && role) {
      headers.Authorization = 'Bearer ' + (await tokenFor(role));
    }
    return baseFetcher(params, Object.assign({}, options, { headers: headers }));
  }

  if (tokenUrl) {
    document.getElementById('userql-role').hidden = false;
    select.addEventListener('change', function () {
      status.textContent = select.value ? '' : 'no token';
      if (select.value) {
        tokenFor(select.value).catch(function (error) {
          status.textContent = error.message;
        });
      }
    });
    status.textContent = 'no token';
  }

  const root = ReactDOM.createRoot(document.getElementById('graphiql'));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      plugins: [GraphiQLPluginExplorer.explorerPlugin()],
      defaultQuery:
        '# Choose a role above, then run this with Ctrl-Enter.\n' +
        '{\n  me { id name role }\n  users(first: 5) {\n    totalCount\n' +
        '    edges { node { id name email role } }\n  }\n}\n',
    }),
  );
})();
