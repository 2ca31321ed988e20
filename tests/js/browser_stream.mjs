// Headless Chromium (playwright-core driving Debian's /usr/bin/chromium) reading ringmq's streams:
//   - a page served by this script from 127.0.0.1 (another origin than the broker's: the broker
//     must list it in `[http] allowed_origins`) opens `new WebSocket(ws://…/v1/mqtt/stream?…)`;
//     the same page from http://localhost (an origin not listed) is refused, there and on /mqtt;
//   - an `EventSource` on `/v1/stream?…` from a page of the broker's own origin (the broker sends
//     no CORS headers, so a cross-origin EventSource would be refused by the browser);
// messages are published with curl (POST /v1/publish) and must reach the page with the right
// topic and payload.
//
//   node browser_stream.mjs --http-port 8080 --key sk_… [--page-port 3000] [--timeout 60]
//   (or RINGMQ_HTTP_PORT / RINGMQ_KEY / RINGMQ_PAGE_PORT). Exits 0 on success.
import { execFile } from 'node:child_process';
import http from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { fail, hardTimeout, settings, sleep, within } from './common.mjs';

const cfg = settings(['httpPort', 'key']);
hardTimeout(cfg.timeoutSecs, 'browser_stream.mjs');

const STEP_MS = 10_000;
const CHROMIUM = '/usr/bin/chromium';
const api = `http://${cfg.host}:${cfg.httpPort}`;
const query = `token=${encodeURIComponent(cfg.key)}&topic=browser/%23`;

/** POST /v1/publish through curl; resolves with the HTTP status (curl -f fails on >= 400). */
function curlPublish(topic, payload) {
  const body = JSON.stringify({ topic, payload, qos: 1, retain: false });
  const args = ['-sf', '-X', 'POST', '--max-time', '5', '-o', '/dev/null', '-w', '%{http_code}',
    '-H', `Authorization: Bearer ${cfg.key}`, '-H', 'Content-Type: application/json', '-d', body,
    `${api}/v1/publish`];
  return new Promise((resolve, reject) => {
    execFile('curl', args, { timeout: 8000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`curl POST /v1/publish ${topic} failed (${err.code ?? err.message}): ${stdout} ${stderr}`));
      else resolve(Number(stdout));
    });
  });
}

// The page under test: opens the WebSocket stream and keeps every frame in window.received.
const pageHtml = `<!doctype html><meta charset="utf-8"><title>ringmq stream</title>
<script>
  window.received = [];
  window.wsState = 'connecting';
  const ws = new WebSocket('ws://${cfg.host}:${cfg.httpPort}/v1/mqtt/stream?${query}');
  ws.onopen = () => { window.wsState = 'open'; };
  ws.onmessage = (e) => { window.received.push(JSON.parse(e.data)); };
  ws.onerror = () => { window.wsState = 'error'; };
  ws.onclose = (e) => { window.wsState = 'closed ' + e.code; };
</script>`;

function servePage() {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end(pageHtml);
  });
  return new Promise((resolve) => server.listen(cfg.pagePort, '127.0.0.1', () => resolve(server)));
}

/** Waits until the page has a frame on `topic`, then checks it. */
async function expectFrame(page, topic, payload, what) {
  try {
    await page.waitForFunction((t) => window.received.some((f) => f.topic === t), topic, { timeout: STEP_MS });
  } catch {
    const state = await page.evaluate(() => ({ state: window.wsState ?? window.esState, received: window.received }));
    throw new Error(`${what}: no frame on ${topic} within ${STEP_MS} ms; page state ${JSON.stringify(state)}`);
  }
  const frame = await page.evaluate((t) => window.received.find((f) => f.topic === t), topic);
  if (frame.payload !== payload || frame.is_base64 !== false || frame.retained !== false || frame.qos !== 1) {
    throw new Error(`${what}: frame ${JSON.stringify(frame)}, want payload ${JSON.stringify(payload)} ` +
      'is_base64=false retained=false qos=1');
  }
  console.log(`ok   ${what}: ${topic} ${JSON.stringify(frame.payload)}`);
}

async function websocketStream(context, server) {
  const page = await context.newPage();
  const pageUrl = `http://127.0.0.1:${server.address().port}/`;
  await page.goto(pageUrl, { timeout: STEP_MS });
  try {
    await page.waitForFunction(() => window.wsState !== 'connecting', null, { timeout: STEP_MS });
  } catch {
    throw new Error(`WebSocket from ${pageUrl}: still connecting after ${STEP_MS} ms`);
  }
  const state = await page.evaluate(() => window.wsState);
  if (state !== 'open') {
    throw new Error(`WebSocket /v1/mqtt/stream from ${pageUrl}: ${state}, want open (browsers hide the HTTP status: ` +
      'check the key, the broker\'s [http] allowed_origins and its log)');
  }
  await sleep(200); // as the Python stream tests: let the subscription reach every shard
  const payload = 'héllo from curl ✓';
  const status = await curlPublish('browser/ws', payload);
  if (status !== 200) throw new Error(`curl publish at QoS 1 answered ${status}, want 200`);
  await expectFrame(page, 'browser/ws', payload, 'browser WebSocket /v1/mqtt/stream');
  await page.close();
}

/** The same page from an origin the broker does not allow (localhost instead of 127.0.0.1: another
 *  origin to the browser) must not get the stream, nor MQTT on /mqtt (cross-site WebSocket
 *  hijacking): the broker answers 403 and the browser reports a close before open. */
async function otherOriginRefused(context, server) {
  const page = await context.newPage();
  const pageUrl = `http://localhost:${server.address().port}/`;
  await page.goto(pageUrl, { timeout: STEP_MS });
  try {
    await page.waitForFunction(() => window.wsState !== 'connecting', null, { timeout: STEP_MS });
  } catch {
    throw new Error(`WebSocket from ${pageUrl}: still connecting after ${STEP_MS} ms`);
  }
  const state = await page.evaluate(() => window.wsState);
  if (state === 'open') throw new Error(`WebSocket /v1/mqtt/stream from ${pageUrl} opened; want it refused`);
  const mqttState = await page.evaluate((url) => new Promise((resolve) => {
    const ws = new WebSocket(url, 'mqtt');
    ws.onopen = () => resolve('open');
    ws.onclose = (e) => resolve(`closed ${e.code}`);
  }), `ws://${cfg.host}:${cfg.httpPort}/mqtt`);
  if (mqttState === 'open') throw new Error(`WebSocket /mqtt from ${pageUrl} opened; want it refused`);
  console.log(`ok   a page of ${pageUrl} is refused (/v1/mqtt/stream: ${state}, /mqtt: ${mqttState})`);
  await page.close();
}

async function eventSourceStream(context) {
  const page = await context.newPage();
  await page.goto(`${api}/healthz`, { timeout: STEP_MS }); // a document of the broker's origin
  await page.evaluate((url) => {
    window.received = [];
    window.esState = 'connecting';
    const es = new EventSource(url);
    es.onopen = () => { window.esState = 'open'; };
    es.onmessage = (e) => { window.received.push(JSON.parse(e.data)); };
    es.onerror = () => { window.esState = `error (readyState ${es.readyState})`; };
  }, `/v1/stream?${query}`);
  try {
    await page.waitForFunction(() => window.esState === 'open', null, { timeout: STEP_MS });
  } catch {
    throw new Error(`EventSource /v1/stream: ${await page.evaluate(() => window.esState)} after ${STEP_MS} ms, want open`);
  }
  await sleep(200);
  const status = await curlPublish('browser/sse', 'event for EventSource');
  if (status !== 200) throw new Error(`curl publish at QoS 1 answered ${status}, want 200`);
  await expectFrame(page, 'browser/sse', 'event for EventSource', 'browser EventSource /v1/stream');
  await page.close();
}

const userDataDir = await mkdtemp(path.join(tmpdir(), 'ringmq-chromium-'));
const server = await servePage();
let context;
let failure;
try {
  context = await within(chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  }), 35_000, `launching ${CHROMIUM}`);
  await websocketStream(context, server);
  await otherOriginRefused(context, server);
  await eventSourceStream(context);
} catch (e) {
  failure = e;
} finally {
  await within(context?.close() ?? Promise.resolve(), 5000, 'closing chromium').catch(() => {});
  server.close();
  await rm(userDataDir, { recursive: true, force: true });
}
if (failure) fail(failure.message);
console.log('browser streams ok');
process.exit(0);
