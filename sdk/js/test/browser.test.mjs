// The SDK in headless Chromium (playwright-core driving Debian's /usr/bin/chromium): a page served
// from 127.0.0.1 (another origin than the broker's, listed in [http] allowed_origins) loads dist/
// and MQTT.js's browser build through an import map, connects over ws://…/mqtt with RingmqClient,
// round-trips JSON, string and bytes, and uses RingmqApi (REST publish, WebSocket and SSE streams).
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';
import { RingmqApi } from '../dist/index.js';
import { SDK_DIR, freePort, mqttUser, startBroker, within } from './helpers.mjs';

const CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

const PAGE = `<!doctype html><meta charset="utf-8"><title>ringmq sdk</title><link rel="icon" href="data:,">
<script type="importmap">{"imports": {"mqtt": "/mqtt.esm.js"}}</script>
<script type="module">
  import * as sdk from '/sdk/index.js';
  window.sdk = sdk;
  window.sdkLoaded = true;
</script>`;

let broker;
let server;
let pagePort;
let userDataDir;
let context;
let creds;

/** Serves the page, dist/ under /sdk/ and MQTT.js's ESM browser build. */
function serve() {
  const files = {
    '/mqtt.esm.js': path.join(SDK_DIR, 'node_modules/mqtt/dist/mqtt.esm.js'),
  };
  return http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://127.0.0.1');
    try {
      if (url.pathname === '/') {
        res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
        res.end(PAGE);
        return;
      }
      let file = files[url.pathname];
      if (!file && url.pathname.startsWith('/sdk/') && !url.pathname.includes('..')) {
        file = path.join(SDK_DIR, 'dist', url.pathname.slice(5));
      }
      if (!file) throw new Error('not found');
      const body = await readFile(file);
      res.writeHead(200, { 'Content-Type': 'text/javascript; charset=utf-8' });
      res.end(body);
    } catch {
      res.writeHead(404);
      res.end();
    }
  });
}

before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is needed (apt-get install chromium)`);
  pagePort = await freePort();
  broker = await startBroker({ config: { http: { allowed_origins: [`http://127.0.0.1:${pagePort}`] } } });
  creds = await mqttUser(new RingmqApi({ url: broker.httpUrl, key: broker.key }), 'browser', 'password123');
  server = serve();
  await new Promise((r) => server.listen(pagePort, '127.0.0.1', r));
  userDataDir = await mkdtemp(path.join(tmpdir(), 'ringmq-sdk-chromium-'));
  context = await within(chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM, headless: true, timeout: 30_000, args: ARGS,
  }), 35_000, `launching ${CHROMIUM}`);
});

after(async () => {
  await within(context?.close() ?? Promise.resolve(), 10_000, 'closing chromium').catch(() => {});
  server?.close();
  await broker?.stop();
  if (userDataDir) await rm(userDataDir, { recursive: true, force: true });
});

test('RingmqClient and RingmqApi in Chromium over ws://…/mqtt', { timeout: 60_000 }, async () => {
  const page = await context.newPage();
  const errors = [];
  const urls = [];
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
  const onRequest = (r) => urls.push(r.url());
  context.on('request', onRequest); // the page's and its workers'
  page.on('websocket', (ws) => urls.push(ws.url()));
  await page.goto(`http://127.0.0.1:${pagePort}/`, { timeout: 10_000 });
  await page.waitForFunction(() => window.sdkLoaded === true, null, { timeout: 10_000 });

  const result = await within(page.evaluate(async ({ httpPort, key, username, password }) => {
    const { RingmqClient, RingmqApi } = window.sdk;
    const wait = async (check, what) => {
      const deadline = Date.now() + 8000;
      while (!check()) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    const out = {};
    // The URL defaults to ws://host:port/mqtt in a browser.
    const sub = new RingmqClient({ host: '127.0.0.1', port: httpPort, username, password });
    const pub = new RingmqClient({ url: `ws://127.0.0.1:${httpPort}/mqtt`, username, password });
    out.url = sub.url;
    await sub.connect();
    await pub.connect();
    const got = {};
    await sub.subscribe('web/#', (topic, message) => { got[topic] = message; });
    await pub.publish('web/json', { n: 1, s: 'ü' }, { qos: 1 });
    await pub.publish('web/text', 'hello browser', { qos: 1 });
    await pub.publish('web/bytes', new Uint8Array([0, 255, 9]), { qos: 1 });
    await wait(() => Object.keys(got).length >= 3, 'three MQTT messages');
    out.json = got['web/json'];
    out.text = got['web/text'];
    out.bytesIsU8 = got['web/bytes'] instanceof Uint8Array;
    out.bytes = Array.from(got['web/bytes'] ?? []);

    // REST publish from the page reaches the MQTT subscriber.
    const api = new RingmqApi({ url: `http://127.0.0.1:${httpPort}`, key });
    out.rest = await api.publish({ topic: 'web/rest', payload: { via: 'rest' }, qos: 1 });
    await wait(() => got['web/rest'], 'the REST publish over MQTT');
    out.restMsg = got['web/rest'];

    // The WebSocket stream (key in ?token=) yields a publish.
    for (const transport of ['websocket', 'sse']) {
      let opened;
      const isOpen = new Promise((r) => { opened = r; });
      const stream = api.stream({ topic: `wstream/${transport}`, transport, onOpen: () => opened() });
      const first = stream[Symbol.asyncIterator]().next();
      await Promise.race([isOpen, first]);
      await new Promise((r) => setTimeout(r, 200));
      await pub.publish(`wstream/${transport}`, `via ${transport}`, { qos: 1 });
      const r = await first;
      out[transport] = r.value?.message;
      stream.close();
    }
    await sub.end();
    await pub.end();
    return out;
  }, { httpPort: broker.httpPort, key: broker.key, ...creds }), 40_000, 'the page scenario');

  assert.equal(result.url, `ws://127.0.0.1:${broker.httpPort}/mqtt`);
  assert.deepEqual(result.json, { n: 1, s: 'ü' });
  assert.equal(result.text, 'hello browser');
  assert.equal(result.bytesIsU8, true);
  assert.deepEqual(result.bytes, [0, 255, 9]);
  assert.equal(result.rest.status, 'queued');
  assert.deepEqual(result.restMsg, { via: 'rest' });
  assert.equal(result.websocket, 'via websocket');
  assert.equal(result.sse, 'via sse');
  assert.deepEqual(errors, []);
  // blob: URLs (MQTT.js's timer worker) belong to the page's origin; data: URLs load nothing.
  const host = (u) => (u.startsWith('blob:') ? new URL(u.slice(5)).hostname : u.startsWith('data:') ? '127.0.0.1' : new URL(u).hostname);
  const foreign = urls.filter((u) => host(u) !== '127.0.0.1');
  assert.deepEqual(foreign, [], 'requests that left 127.0.0.1');
  assert.ok(urls.some((u) => u.startsWith(`ws://127.0.0.1:${broker.httpPort}/mqtt`)), `no /mqtt WebSocket in ${urls}`);
  context.off('request', onRequest);
  await page.close();
});
