// Drives headless Chromium through userql's GraphiQL page with every request to another
// origin blocked: pick the ADMIN role, run a query, read the result pane. Prints one JSON
// object for the Python test to judge. Usage: node graphiql.mjs <page url> <chromium> [png]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [url, executablePath, screenshot] = process.argv.slice(2);
const QUERY = '{ me { email role } users(first: 2) { totalCount edges { node { email } } } }';
const origin = new URL(url).origin;
const report = { blocked: [], consoleErrors: [], pageErrors: [], csp: null, result: null };
const profile = mkdtempSync(join(tmpdir(), 'userql-chromium-'));

const context = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
try {
  await context.route('**/*', (route) => {
    const target = new URL(route.request().url());
    if (target.origin === origin || target.protocol === 'data:') return route.continue();
    report.blocked.push(target.href);
    return route.abort();
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('console', (message) => {
    if (message.type() === 'error') report.consoleErrors.push(message.text());
  });
  page.on('pageerror', (error) => report.pageErrors.push(String(error)));

  const response = await page.goto(url, { waitUntil: 'load' });
  report.csp = response.headers()['content-security-policy'] ?? null;
  const editor = '.graphiql-query-editor .CodeMirror';
  await page.waitForSelector(editor, { timeout: 30000 });
  await page.selectOption('#userql-role-select', 'ADMIN');
  await page.waitForFunction(
    () => document.getElementById('userql-role-status').textContent.includes('until'),
  );
  await page.evaluate(
    ([selector, query]) => document.querySelector(selector).CodeMirror.setValue(query),
    [editor, QUERY],
  );
  await page.click('.graphiql-execute-button');
  const pane = '.graphiql-response .CodeMirror';
  await page.waitForFunction(
    (selector) => document.querySelector(selector)?.CodeMirror.getValue().includes('"data"'),
    pane,
    { timeout: 30000 },
  );
  report.result = JSON.parse(
    await page.evaluate((selector) => document.querySelector(selector).CodeMirror.getValue(), pane),
  );
  if (screenshot) await page.screenshot({ path: screenshot });
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(report));
