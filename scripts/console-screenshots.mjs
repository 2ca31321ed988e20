// Screenshots of the web console for the docs: docs/console/{overview,sessions,users,acl,topics,keys,org,orgs}.png
// at 1280×800, taken in headless Chromium (playwright-core from tests/js/node_modules, Debian's
// /usr/bin/chromium) against a running broker.
//
//   RINGMQ_URL=http://127.0.0.1:8080 RINGMQ_KEY=sk_… node scripts/console-screenshots.mjs [--wait 20]
//
// While it runs, a few MQTT.js clients (over ws://…/mqtt on the same port, clean sessions, no
// retained messages: nothing is left behind) connect as demo-sensor-N, subscribe and publish small
// JSON readings on demo/…, so the overview's charts, the sessions table and the watched topic
// have something to show. --wait: seconds of traffic before the overview is taken (the charts
// draw the last 5 minutes). Needs `npm ci` in tests/js.
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(path.join(root, 'tests', 'js', 'package.json'));
let chromium;
let mqtt;
try {
  ({ chromium } = require('playwright-core'));
  mqtt = require('mqtt');
} catch (e) {
  console.error(`needs the Node modules of tests/js (cd tests/js && npm ci): ${e.message}`);
  process.exit(2);
}

const { values: opts } = parseArgs({ options: { wait: { type: 'string', default: '20' }, out: { type: 'string' } } });
const base = (process.env.RINGMQ_URL || '').replace(/\/+$/, '');
const key = process.env.RINGMQ_KEY;
if (!base || !key) {
  console.error('set RINGMQ_URL (the broker\'s HTTP listener, e.g. http://127.0.0.1:8080) and RINGMQ_KEY (an sk_ key; the root key shows every page)');
  process.exit(2);
}
const outDir = opts.out ? path.resolve(opts.out) : path.join(root, 'docs', 'console');
const CHROMIUM = '/usr/bin/chromium';
const STEP_MS = 15_000;
setTimeout(() => { console.error('console-screenshots: hard timeout'); process.exit(1); }, (Number(opts.wait) + 120) * 1000).unref();

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Demo devices over MQTT on WebSocket; returns a stop function. Failures only warn. */
async function demoTraffic() {
  const wsUrl = `${base.replace(/^http/, 'ws')}/mqtt`;
  const clients = [];
  for (let i = 1; i <= 4; i += 1) {
    const c = mqtt.connect(wsUrl, { clientId: `demo-sensor-${i}`, protocolVersion: 5, clean: true, reconnectPeriod: 0, connectTimeout: 5000 });
    const up = await new Promise((resolve) => {
      c.once('connect', () => resolve(true));
      c.once('error', (e) => { console.warn(`demo client ${i}: ${e.message}`); resolve(false); });
      c.once('close', () => resolve(false));
    });
    if (!up) { c.end(true); break; }
    c.on('error', () => {});
    c.subscribe(i % 2 ? 'demo/commands/#' : `demo/sensors/${i}/#`, { qos: 1 });
    clients.push(c);
  }
  if (!clients.length) {
    console.warn(`no demo traffic: MQTT over ${wsUrl} refused (anonymous clients not allowed?); the pages will be emptier`);
    return () => {};
  }
  let n = 0;
  const timer = setInterval(() => {
    n += 1;
    // A rate that rises and falls, so the charts have a shape.
    const busy = 0.55 + 0.45 * Math.sin(n / 25);
    clients.forEach((c, i) => {
      if (Math.random() > busy) return;
      const reading = { device: `sensor-${i + 1}`, temperature: +(20 + 3 * Math.sin((n + i * 7) / 9)).toFixed(2), humidity: 40 + ((n * (i + 3)) % 17), seq: n };
      c.publish(`demo/sensors/${i + 1}/reading`, JSON.stringify(reading), { qos: i % 2 ? 1 : 0 });
      if (n % 4 === i) c.publish('demo/commands/reboot', JSON.stringify({ target: `sensor-${i + 1}`, at: Date.now() }), { qos: 1 });
    });
  }, 250);
  return () => { clearInterval(timer); clients.forEach((c) => c.end(true)); };
}

async function shot(page, name) {
  await sleep(400); // let the last frame paint
  const file = path.join(outDir, `${name}.png`);
  await page.screenshot({ path: file });
  console.log(`wrote ${path.relative(process.cwd(), file)}`);
}

async function go(page, route, ready) {
  await page.getByTestId(`nav-${route}`).click();
  await page.waitForFunction((r) => location.hash === `#/${r}` && document.querySelector(`.page-${r}`), route);
  if (ready) await ready();
  await page.evaluate(() => { document.activeElement?.blur(); window.scrollTo(0, 0); });
}

/** Waits until no table of the page says Loading…. */
const tablesLoaded = (page) => page.waitForFunction(() => ![...document.querySelectorAll('td.empty')].some((td) => td.textContent === 'Loading…'), null, { timeout: STEP_MS });

await mkdir(outDir, { recursive: true });
const userDataDir = await mkdtemp(path.join(tmpdir(), 'ringmq-shots-'));
let context;
let stopTraffic = () => {};
let code = 0;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM, headless: true, timeout: 30_000, viewport: { width: 1280, height: 800 }, deviceScaleFactor: 1,
    colorScheme: 'light',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = context.pages()[0] ?? await context.newPage();
  page.on('pageerror', (e) => console.warn(`page error: ${e.message}`));
  await page.goto(`${base}/console`, { timeout: STEP_MS });
  await page.getByTestId('login-key').fill(key);
  await page.getByTestId('login-submit').click();
  await page.getByTestId('nav-overview').waitFor({ state: 'visible', timeout: STEP_MS });

  stopTraffic = await demoTraffic();
  console.log(`${opts.wait} s of demo traffic for the charts…`);
  await sleep(Number(opts.wait) * 1000);
  await page.evaluate(() => { document.activeElement?.blur(); });
  await shot(page, 'overview');

  await go(page, 'sessions', () => tablesLoaded(page));
  await shot(page, 'sessions');

  await go(page, 'users', () => tablesLoaded(page));
  await shot(page, 'users');

  await go(page, 'acl', () => tablesLoaded(page));
  await shot(page, 'acl');

  await go(page, 'topics');
  await page.getByTestId('watch-filter').fill('demo/#');
  await page.getByTestId('watch-start').click();
  await sleep(3000);
  await page.getByTestId('publish-topic').fill('demo/commands/reboot');
  await page.getByTestId('publish-payload').fill('{"target": "sensor-2", "reason": "firmware 1.4.2"}');
  await page.evaluate(() => { document.activeElement?.blur(); window.scrollTo(0, 0); });
  await shot(page, 'topics');

  await go(page, 'keys', () => tablesLoaded(page));
  await shot(page, 'keys');

  await go(page, 'org', () => page.getByTestId('org-usage').waitFor({ timeout: STEP_MS }));
  await shot(page, 'org');

  // Orgs: only the root key sees it.
  if (await page.getByTestId('nav-orgs').isVisible()) {
    await go(page, 'orgs', () => tablesLoaded(page));
    await shot(page, 'orgs');
  }
} catch (e) {
  console.error(`console-screenshots: ${e.message}`);
  code = 1;
} finally {
  stopTraffic();
  await context?.close().catch(() => {});
  await rm(userDataDir, { recursive: true, force: true });
}
process.exit(code);
