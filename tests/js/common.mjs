// Shared bits of the tests/js scripts: settings from CLI flags or env, a hard deadline, bounded waits.
import { parseArgs } from 'node:util';

/** `--mqtt-port`, `--http-port`, `--key` (also from env RINGMQ_MQTT_PORT, RINGMQ_HTTP_PORT,
 *  RINGMQ_KEY), `--host`, `--timeout` (seconds: the hard limit), `--cases` (mqttjs.mjs),
 *  `--page-port` (browser_stream.mjs: where its page is served; 0 = any free port). */
export function settings(needed) {
  const { values } = parseArgs({
    options: {
      host: { type: 'string', default: '127.0.0.1' },
      'mqtt-port': { type: 'string', default: process.env.RINGMQ_MQTT_PORT },
      'http-port': { type: 'string', default: process.env.RINGMQ_HTTP_PORT },
      key: { type: 'string', default: process.env.RINGMQ_KEY },
      timeout: { type: 'string', default: '60' },
      cases: { type: 'string' },
      'page-port': { type: 'string', default: process.env.RINGMQ_PAGE_PORT ?? '0' },
    },
  });
  const s = {
    host: values.host,
    mqttPort: Number(values['mqtt-port']),
    httpPort: Number(values['http-port']),
    key: values.key,
    timeoutSecs: Number(values.timeout),
    cases: values.cases,
    pagePort: Number(values['page-port']),
  };
  for (const name of needed) {
    if (!s[name]) fail(`missing setting ${name}: pass --mqtt-port/--http-port/--key or RINGMQ_* env`);
  }
  return s;
}

export function fail(reason) {
  console.error(`FAIL: ${reason}`);
  process.exit(1);
}

/** Exits 1 after `secs` whatever is still pending (a hung socket or browser included). */
export function hardTimeout(secs, what) {
  setTimeout(() => fail(`${what}: hard timeout after ${secs}s`), secs * 1000).unref();
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` every 20 ms; throws `timed out after ms waiting for what` (with `detail()`). */
export async function waitFor(check, ms, what, detail = () => '') {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}${detail()}`);
    await sleep(20);
  }
}

/** Rejects with `what: timed out after ms` unless `promise` settles first. */
export function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
