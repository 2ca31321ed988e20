// The web console (GET /console) in headless Chromium (playwright-core driving Debian's
// /usr/bin/chromium), against a running broker:
//   - a bogus key is refused on the login form; the root key logs in and sees the Orgs page;
//   - an MQTT.js client (a hostile-looking client id) is counted in the overview's connections
//     (the live feed) and listed in the sessions table (server-side search too), with its
//     subscription in the details; it is disconnected from the page and sees the disconnect;
//   - an ACL allow rule and a user are created from the page, and the user logs in over MQTT;
//   - a topic is watched (WebSocket stream) and a REST publish made here (and one from the page's
//     publish form) appear in the list, JSON pretty-printed, as text;
//   - an API key made on the Keys page is shown once and works; revoked from the page, it is 401;
//   - a second sk_ key logs in (no Orgs page: not root), is revoked through the API with the root
//     key, and the page's next call brings the login back with the stored key cleared;
//   - at a phone's width (390 px) the page does not scroll sideways;
// and throughout: no page error, no console error (a CSP violation is one; the 401s and the 403
// the steps above provoke are allowed), no request to anything but the page's own 127.0.0.1
// origin, no element made from a client id or payload, no form control without a label.
//
//   node console.mjs --mqtt-port 1883 --http-port 8080 --key sk_… [--console-url URL] [--timeout 90]
//   (or RINGMQ_MQTT_PORT / RINGMQ_HTTP_PORT / RINGMQ_KEY). --console-url: where the page is
//   (default http://HOST:HTTP_PORT/console; a development server that proxies /v1 may stand in).
//   Exits 0 on success.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import mqtt from 'mqtt';
import { chromium } from 'playwright-core';
import { fail, hardTimeout, sleep, within } from './common.mjs';

const { values: opts } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    'mqtt-port': { type: 'string', default: process.env.RINGMQ_MQTT_PORT },
    'http-port': { type: 'string', default: process.env.RINGMQ_HTTP_PORT },
    key: { type: 'string', default: process.env.RINGMQ_KEY },
    'console-url': { type: 'string' },
    timeout: { type: 'string', default: '90' },
    headed: { type: 'boolean', default: false },
  },
});
const host = opts.host;
const mqttPort = Number(opts['mqtt-port']);
const httpPort = Number(opts['http-port']);
const rootKey = opts.key;
if (!mqttPort || !httpPort || !rootKey) fail('missing --mqtt-port, --http-port or --key (or RINGMQ_* env)');
hardTimeout(Number(opts.timeout), 'console.mjs');

const CHROMIUM = '/usr/bin/chromium';
const STEP_MS = 10_000;
const api = `http://${host}:${httpPort}`;
const pageUrl = opts['console-url'] ?? `${api}/console`;
const pageOrigin = new URL(pageUrl).origin;
const RUN = `${process.pid.toString(36)}${Date.now().toString(36)}`;
const PASSWORD = 'console test password';

const ok = (what) => console.log(`ok   ${what}`);

/** The broker's REST API, from here (not from the page). */
async function rest(method, route, body, key = rootKey) {
  const headers = { Authorization: `Bearer ${key}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(`${api}${route}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

/** Connects MQTT.js (no reconnects); rejects with the reason when no CONNACK arrives. */
async function mqttConnect(clientId, extra = {}) {
  const client = mqtt.connect(`mqtt://${host}:${mqttPort}`, {
    clientId, protocolVersion: 5, clean: true, reconnectPeriod: 0, connectTimeout: STEP_MS, ...extra,
  });
  client.on('error', () => {}); // reported through the promises below
  try {
    await within(new Promise((resolve, reject) => {
      client.once('connect', resolve);
      client.once('error', reject);
      client.once('close', () => reject(new Error('connection closed before CONNACK')));
    }), STEP_MS, `CONNACK for ${clientId}`);
  } catch (e) {
    client.end(true);
    throw new Error(`MQTT.js ${clientId}${extra.username ? ` (user ${extra.username})` : ''}: ${e.message}`);
  }
  return client;
}

/** Waits for `locator` to be visible, with what the page shows when it is not. */
async function visible(page, locator, what, ms = STEP_MS) {
  try {
    await locator.first().waitFor({ state: 'visible', timeout: ms });
  } catch {
    throw new Error(`${what}: not visible within ${ms} ms; page alert: ${await alertText(page)}`);
  }
}

async function alertText(page) {
  return page.evaluate(() => {
    const a = document.querySelector('[data-testid="alert"]');
    const l = document.querySelector('[data-testid="login-error"]');
    return JSON.stringify({ alert: a && !a.hidden ? a.textContent.trim() : '', login: l ? l.textContent : '', hash: location.hash });
  }).catch((e) => `(page gone: ${e.message})`);
}

/** Waits until `testid`'s text contains (or, with absent, no longer contains) `text`. */
async function textIn(page, testid, text, what, { absent = false, ms = STEP_MS } = {}) {
  try {
    await page.waitForFunction(({ id, t, no }) => {
      const el = document.querySelector(`[data-testid="${id}"]`);
      return Boolean(el) && el.textContent.includes(t) !== no;
    }, { id: testid, t: text, no: absent }, { timeout: ms });
  } catch {
    const now = await page.evaluate((id) => document.querySelector(`[data-testid="${id}"]`)?.textContent ?? '(no element)', testid);
    throw new Error(`${what}: ${testid} ${absent ? 'still has' : 'lacks'} ${JSON.stringify(text)} after ${ms} ms; it reads ${JSON.stringify(now.slice(0, 600))}; alert ${await alertText(page)}`);
  }
}

async function metric(page, id) {
  return page.getByTestId(`metric-${id}`).textContent();
}

async function waitMetric(page, id, want, what) {
  try {
    await page.waitForFunction(({ i, w }) => document.querySelector(`[data-testid="metric-${i}"]`)?.textContent === w,
      { i: id, w: String(want) }, { timeout: STEP_MS });
  } catch {
    const status = await page.getByTestId('feed-status').textContent().catch(() => '');
    throw new Error(`${what}: metric-${id} reads ${JSON.stringify(await metric(page, id))}, want ${want}; feed status ${JSON.stringify(status)}`);
  }
}

async function nav(page, name) {
  await page.getByTestId(`nav-${name}`).click();
  await page.waitForFunction((n) => location.hash === `#/${n}` && document.querySelector(`.page-${n}`), name, { timeout: STEP_MS });
  // Every form control of the page has a label.
  const unlabelled = await page.evaluate(() => [...document.querySelectorAll('input, select, textarea')]
    .filter((e) => e.type !== 'hidden' && !e.labels?.length && !e.getAttribute('aria-label'))
    .map((e) => e.outerHTML.slice(0, 120)));
  for (const u of unlabelled) problems.push(`the ${name} page has a control without a label: ${u}`);
}

async function login(page, key, what) {
  await visible(page, page.getByTestId('login-key'), `${what}: the login form`);
  await page.getByTestId('login-key').fill(key);
  await page.getByTestId('login-submit').click();
  await visible(page, page.getByTestId('nav-overview'), `${what}: the console after login`);
}

// -- the steps ----------------------------------------------------------------------------------

async function preflight() {
  let res;
  try {
    res = await fetch(pageUrl);
  } catch (e) {
    throw new Error(`GET ${pageUrl} failed: ${e.message}`);
  }
  const body = await res.text();
  if (res.status !== 200 || !(res.headers.get('content-type') || '').startsWith('text/html')) {
    throw new Error(`GET ${pageUrl} answered ${res.status} ${res.headers.get('content-type')}: ${body.slice(0, 200)} ` +
      '(does this broker serve the console?)');
  }
  const csp = res.headers.get('content-security-policy') || '';
  for (const part of ["default-src 'self'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"]) {
    if (!csp.includes(part)) throw new Error(`GET ${pageUrl}: Content-Security-Policy ${JSON.stringify(csp)} lacks ${part}`);
  }
  ok(`GET ${pageUrl}: 200 text/html with a strict Content-Security-Policy`);
}

async function loginAsRoot(page) {
  await page.goto(pageUrl, { timeout: STEP_MS });
  await visible(page, page.getByTestId('login-key'), 'the login form');
  await page.getByTestId('login-key').fill(`sk_not_a_key_${RUN}`);
  await page.getByTestId('login-submit').click();
  await textIn(page, 'login-error', '401', 'a bogus key');
  ok('a bogus key is refused on the login form (401 shown)');
  await login(page, rootKey, 'the root key');
  await visible(page, page.getByTestId('nav-orgs'), 'the Orgs page link for the root key');
  ok('the root key logs in and sees the Orgs page');
}

async function clientCountedAndListed(page, cid) {
  try {
    await page.waitForFunction(() => /^\d+$/.test(document.querySelector('[data-testid="metric-connections"]')?.textContent ?? ''),
      null, { timeout: STEP_MS });
  } catch {
    const status = await page.getByTestId('feed-status').textContent().catch(() => '');
    throw new Error(`the overview shows no connection count after ${STEP_MS} ms; feed status ${JSON.stringify(status)}`);
  }
  const before = Number(await metric(page, 'connections'));
  const client = await mqttConnect(cid);
  const granted = await client.subscribeAsync(`console/${RUN}/device/#`, { qos: 1 });
  if (granted[0].qos !== 1) throw new Error(`subscribe granted ${JSON.stringify(granted)}`);
  await waitMetric(page, 'connections', before + 1, 'the MQTT.js client');
  ok('the MQTT.js client is counted in metric-connections (live feed)');

  await nav(page, 'sessions');
  await textIn(page, 'sessions-table', cid, 'the sessions table');
  const search = page.getByTestId('sessions-search');
  await search.fill(`no-such-client-${RUN}`);
  await textIn(page, 'sessions-table', cid, 'search for another client id', { absent: true });
  await search.fill(RUN);
  await textIn(page, 'sessions-table', cid, 'search for a part of the client id');
  ok('the client is listed in the sessions table, and found by the server-side search');

  await page.getByTestId(`details-${cid}`).click();
  await textIn(page, 'session-details', `console/${RUN}/device/#`, 'the session details');
  const madeUp = await page.evaluate(() => document.querySelectorAll('main b, main i, main img').length);
  if (madeUp) throw new Error(`the page made ${madeUp} element(s) out of a client id or payload`);
  ok('the details show its subscription; its client id is text, not markup');
  return { client, before };
}

async function disconnectFromPage(page, { client, before }, cid) {
  const closed = new Promise((resolve) => client.once('close', resolve));
  let reason = null;
  client.once('disconnect', (packet) => { reason = packet.reasonCode; });
  await page.getByTestId(`disconnect-${cid}`).click();
  await visible(page, page.getByTestId('confirm'), 'the confirmation dialog');
  await page.getByTestId('confirm').click();
  await within(closed, STEP_MS, 'the MQTT.js client seeing the disconnect');
  ok(`disconnected from the page: the MQTT.js client saw its connection closed (DISCONNECT reason ${reason ?? 'none'})`);
  await textIn(page, 'sessions-table', cid, 'the active sessions after the disconnect', { absent: true });
  await nav(page, 'overview');
  await waitMetric(page, 'connections', before, 'after the disconnect');
  ok('the connection count falls back after the disconnect');
  client.end(true);
}

async function userFromPage(page) {
  const username = `u${RUN}`;
  await nav(page, 'acl');
  await page.getByTestId('rule-topic').fill(`console/${RUN}/{username}/#`);
  await page.getByTestId('rule-action').selectOption('all');
  await page.getByTestId('rule-permission').selectOption('allow');
  await page.getByTestId('rule-create').click();
  await textIn(page, 'rules-table', `console/${RUN}/{username}/#`, 'the new ACL rule');
  ok('an ACL allow rule is created from the page');

  await nav(page, 'users');
  await page.getByTestId('user-username').fill(username);
  await page.getByTestId('user-password').fill(PASSWORD);
  await page.getByTestId('user-create').click();
  await textIn(page, 'users-table', username, 'the new user');
  const client = await mqttConnect(`${RUN}-user`, { username, password: PASSWORD });
  const granted = await client.subscribeAsync(`console/${RUN}/${username}/x`, { qos: 1 });
  // MQTT.js rejects a SUBACK with a refusal code ("Subscribe error: Not authorized").
  const denied = await client.subscribeAsync(`console/${RUN}/other/x`, { qos: 1 })
    .then((g) => (g[0].qos >= 128 ? `refused ${g[0].qos}` : `granted ${g[0].qos}`), (e) => `refused: ${e.message}`);
  client.end(true);
  if (granted[0].qos !== 1 || !denied.startsWith('refused')) {
    throw new Error(`user ${username}: subscribe granted ${JSON.stringify(granted)} (want 1) and another topic ${denied} (want a refusal)`);
  }
  ok(`a user is created from the page and logs in over MQTT (its rule allows console/${RUN}/${username}/#, nothing else)`);
}

async function watchTopics(page) {
  await nav(page, 'topics');
  await page.getByTestId('watch-filter').fill(`console/${RUN}/#`);
  await page.getByTestId('watch-start').click();
  try {
    await page.waitForFunction(() => document.querySelector('[data-testid="watch-status"]')?.dataset.state === 'open', null, { timeout: STEP_MS });
  } catch {
    throw new Error(`the watch did not open: ${await page.getByTestId('watch-status').textContent()}`);
  }
  await sleep(300); // as the Python stream tests: let the subscription reach every shard
  const payload = { hello: '<i>world</i>', run: RUN };
  const r = await rest('POST', '/v1/publish', { topic: `console/${RUN}/rest`, payload: JSON.stringify(payload), qos: 1 });
  if (r.status !== 200) throw new Error(`POST /v1/publish answered ${r.status} ${JSON.stringify(r.body)}`);
  await textIn(page, 'watch-messages', `console/${RUN}/rest`, 'the REST publish in the watched list');
  const pretty = JSON.stringify(payload, null, 2);
  const shown = await page.evaluate(() => [...document.querySelectorAll('[data-testid="watch-messages"] pre')].map((p) => p.textContent));
  if (!shown.includes(pretty)) throw new Error(`payload shown as ${JSON.stringify(shown)}, want ${JSON.stringify(pretty)}`);
  if (await page.evaluate(() => document.querySelectorAll('[data-testid="watch-messages"] i').length)) {
    throw new Error('the payload\'s <i> became an element');
  }
  ok('a REST publish appears in the watched topic\'s list, JSON pretty-printed, as text');

  await page.getByTestId('publish-topic').fill(`console/${RUN}/page`);
  await page.getByTestId('publish-payload').fill('from the page');
  await page.getByTestId('publish-qos').selectOption('1');
  await page.getByTestId('publish-submit').click();
  await textIn(page, 'publish-status', 'at QoS 1', 'the publish form\'s answer');
  await textIn(page, 'watch-messages', 'from the page', 'the page\'s own publish in the list');
  ok('the publish form publishes at QoS 1 and the watch shows it');
}

async function keyFromPage(page) {
  await nav(page, 'keys');
  const name = `console key ${RUN}`;
  await page.getByTestId('key-name').fill(name);
  await page.getByTestId('key-kind').selectOption('secret');
  await page.getByTestId('key-create').click();
  await visible(page, page.getByTestId('new-key'), 'the new key\'s secret panel');
  const secret = await page.getByTestId('new-key-secret').inputValue();
  if (!secret.startsWith('sk_')) throw new Error(`the new key reads ${JSON.stringify(secret)}`);
  let r = await rest('GET', '/v1/org', undefined, secret);
  if (r.status !== 200) throw new Error(`the key made on the page: GET /v1/org answered ${r.status}`);
  await textIn(page, 'keys-table', name, 'the keys table');
  const keys = await rest('GET', '/v1/keys?limit=1000');
  const made = keys.body.items.find((k) => k.name === name);
  await page.getByTestId(`key-revoke-${made.id}`).click();
  await page.getByTestId('confirm').click();
  await textIn(page, 'keys-table', name, 'the revoked key gone from the list', { absent: true });
  r = await rest('GET', '/v1/org', undefined, secret);
  if (r.status !== 401) throw new Error(`the key revoked on the page: GET /v1/org answered ${r.status}, want 401`);
  ok('a key created on the Keys page is shown once and works; revoked from the page, it is refused (401)');
}

async function phoneWidth(page) {
  await page.setViewportSize({ width: 390, height: 844 });
  for (const name of ['sessions', 'overview']) {
    await nav(page, name);
    await sleep(200);
    const widths = await page.evaluate(() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]);
    if (widths[0] > widths[1] + 1) throw new Error(`at 390 px the ${name} page scrolls sideways (${widths[0]} > ${widths[1]})`);
  }
  await page.setViewportSize({ width: 1280, height: 800 });
  ok('at a phone\'s width (390 px) the pages do not scroll sideways');
}

async function revokedKeyLogsOut(page, state) {
  const made = await rest('POST', '/v1/keys', { name: `second ${RUN}`, kind: 'secret' });
  if (made.status !== 201) throw new Error(`POST /v1/keys answered ${made.status} ${JSON.stringify(made.body)}`);
  await page.getByTestId('logout').click();
  await visible(page, page.getByTestId('login-key'), 'the login form after logging out');
  state.expect403 = true; // GET /v1/orgs with a key that is not root
  await login(page, made.body.key, 'the second key');
  await nav(page, 'overview');
  if (await page.getByTestId('nav-orgs').isVisible()) throw new Error('a key that is not root sees the Orgs page link');
  try {
    await page.waitForFunction(() => /^\d+$/.test(document.querySelector('[data-testid="metric-connections"]')?.textContent ?? ''), null, { timeout: STEP_MS });
  } catch {
    throw new Error(`an org key's overview shows no connection count; feed status ${JSON.stringify(await page.getByTestId('feed-status').textContent())}`);
  }
  for (const broadOnly of ['memory', 'asleep', 'dropped']) {
    if (await page.getByTestId(`metric-${broadOnly}`).isVisible()) throw new Error(`an org key's overview shows metric-${broadOnly}`);
  }
  const stored = await page.evaluate(() => Object.values(sessionStorage));
  if (!stored.includes(made.body.key)) throw new Error('the key is not in sessionStorage');
  ok('a second sk_ key logs in (no Orgs page: not root; its org\'s figures only), kept in sessionStorage');

  state.expect401 = true;
  const r = await rest('DELETE', `/v1/keys/${made.body.id}`);
  if (r.status !== 204) throw new Error(`DELETE /v1/keys/${made.body.id} answered ${r.status}`);
  // The page's next call: opening the sessions page (by its address: the feed may have noticed the
  // revocation first and brought the login back already, hiding the navigation).
  await page.evaluate(() => { location.hash = '#/sessions'; });
  await visible(page, page.getByTestId('login-key'), 'the login form after the key was revoked');
  const left = await page.evaluate(() => sessionStorage.length);
  if (left !== 0) throw new Error(`sessionStorage still holds ${left} item(s) after the 401`);
  ok('revoked through the API, the key\'s next call (401) brings the login back and clears the stored key');
}

// -- the run -------------------------------------------------------------------------------------

const problems = [];
const state = { expect401: false, expect403: false };
const userDataDir = await mkdtemp(path.join(tmpdir(), 'ringmq-chromium-'));
let context;
let failure;
const clients = [];
try {
  await preflight();
  context = await within(chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: !opts.headed,
    timeout: 30_000,
    viewport: { width: 1280, height: 800 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  }), 35_000, `launching ${CHROMIUM}`);
  const page = context.pages()[0] ?? await context.newPage();
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    // A refused fetch is logged by Chromium itself; the steps provoke 401s and a 403.
    const refused = /Failed to load resource: the server responded with a status of (\d+)/.exec(m.text());
    if (refused) return; // checked against the responses below
    problems.push(`console error: ${m.text()} (${m.location().url})`);
  });
  const checkUrl = (url, what) => {
    const u = new URL(url);
    if (u.protocol === 'data:') return;
    if (u.hostname !== '127.0.0.1' || u.host !== new URL(pageOrigin).host) problems.push(`${what} off the broker's host: ${url}`);
  };
  page.on('request', (r) => checkUrl(r.url(), `request ${r.method()}`));
  page.on('websocket', (ws) => checkUrl(ws.url(), 'WebSocket'));
  page.on('response', (r) => {
    const status = r.status();
    if (status < 400) return;
    const p = new URL(r.url()).pathname;
    if (status === 401 && (state.expect401 || p === '/v1/org')) return; // the bogus key, then the revoked one
    if (status === 403 && p === '/v1/orgs' && state.expect403) return;
    problems.push(`unexpected ${status} for ${r.request().method()} ${r.url()}`);
  });

  await loginAsRoot(page);
  const cid = `console-${RUN} <b>"bold"</b> & 'co'`;
  const counted = await clientCountedAndListed(page, cid);
  clients.push(counted.client);
  await disconnectFromPage(page, counted, cid);
  await userFromPage(page);
  await watchTopics(page);
  await keyFromPage(page);
  await phoneWidth(page);
  await revokedKeyLogsOut(page, state);
  if (problems.length) throw new Error(`the page misbehaved:\n  ${problems.join('\n  ')}`);
  ok('no page error, no console error, no request off 127.0.0.1, no unexpected error status');
} catch (e) {
  failure = e;
  if (problems.length && !e.message.includes('misbehaved')) failure = new Error(`${e.message}\nalso:\n  ${problems.join('\n  ')}`);
} finally {
  for (const c of clients) c.end(true);
  await within(context?.close() ?? Promise.resolve(), 5000, 'closing chromium').catch(() => {});
  await rm(userDataDir, { recursive: true, force: true });
}
if (failure) fail(failure.message);
console.log('console ok');
process.exit(0);
