// Shared test helpers: a real ringmq broker on free loopback ports, bounded waits, a schema checker.
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const SDK_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const REPO = path.resolve(SDK_DIR, '../..');
export const RINGMQ_BIN = process.env.RINGMQ_BIN || path.join(REPO, 'target/debug/ringmq');

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Rejects with `what: timed out after ms` unless `promise` settles first. */
export function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Polls `check` (sync or async) every 20 ms until truthy; throws after `ms`. */
export async function waitFor(check, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** A loopback TCP port the kernel says is free now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function toml(v) {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return `[${v.map(toml).join(', ')}]`;
  return `{ ${Object.entries(v).map(([k, x]) => `${k} = ${toml(x)}`).join(', ')} }`;
}

/** TOML of `{section: {key: value}}`; `{'auth.providers': [{…}]}` becomes `[[auth.providers]]` tables. */
export function writeToml(sections) {
  const out = [];
  for (const [section, kv] of Object.entries(sections)) {
    if (Array.isArray(kv)) {
      for (const t of kv) {
        out.push(`[[${section}]]`, ...Object.entries(t).map(([k, v]) => `${k} = ${toml(v)}`), '');
      }
    } else {
      out.push(`[${section}]`, ...Object.entries(kv).map(([k, v]) => `${k} = ${toml(v)}`), '');
    }
  }
  return out.join('\n');
}

/**
 * Starts the broker (`--shards 1`, fresh data dir) and waits for /readyz; `config` is a TOML overlay
 * (see writeToml). Returns { mqttPort, httpPort, httpUrl, key, dataDir, restart(), stop(), log() }.
 */
export async function startBroker({ config, shards = 1 } = {}) {
  const work = await mkdtemp(path.join(tmpdir(), 'ringmq-sdk-js-'));
  const dataDir = path.join(work, 'data');
  const logPath = path.join(work, 'broker.log');
  let configPath;
  if (config) {
    configPath = path.join(work, 'ringmq.toml');
    await writeFile(configPath, writeToml(config));
  }
  const b = { dataDir, work, proc: undefined, logText: '' };
  b.log = () => b.logText.slice(-4000);
  const launch = async () => {
    for (let attempt = 0; attempt < 5; attempt++) {
      if (!b.mqttPort || attempt > 0) {
        b.mqttPort = await freePort();
        b.httpPort = await freePort();
        if (b.httpPort === b.mqttPort) continue;
      }
      b.httpUrl = `http://127.0.0.1:${b.httpPort}`;
      const args = ['serve', '--mqtt-listen', `127.0.0.1:${b.mqttPort}`, '--http-listen', `127.0.0.1:${b.httpPort}`,
        '--data-dir', dataDir, '--shards', String(shards), '--log', 'warn'];
      if (configPath) args.push('--config', configPath);
      const proc = spawn(RINGMQ_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      b.proc = proc;
      let exited = false;
      proc.on('exit', () => { exited = true; });
      const onData = (d) => { b.logText += d.toString(); };
      proc.stdout.on('data', onData);
      proc.stderr.on('data', onData);
      const deadline = Date.now() + 15_000;
      while (Date.now() < deadline && !exited) {
        try {
          const r = await fetch(`${b.httpUrl}/readyz`, { signal: AbortSignal.timeout(1000) });
          if (r.status === 200) return;
        } catch { /* not yet */ }
        await sleep(50);
      }
      if (!exited) proc.kill('SIGKILL');
      if (!/address in use|Address already in use/i.test(b.logText)) {
        throw new Error(`broker did not become ready (exited: ${exited}):\n${b.log()}`);
      }
    }
    throw new Error(`broker did not start:\n${b.log()}`);
  };
  /** Stops the process (SIGTERM, then SIGKILL after 10 s). */
  b.kill = async () => {
    const p = b.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const done = new Promise((r) => p.once('exit', r));
    p.kill('SIGTERM');
    const t = setTimeout(() => p.kill('SIGKILL'), 10_000);
    await done;
    clearTimeout(t);
  };
  /** Restarts on the same ports and data dir. */
  b.restart = async () => { await b.kill(); await launch(); };
  /** Stops and removes the data dir. */
  b.stop = async () => { await b.kill(); await rm(work, { recursive: true, force: true }); };
  try {
    await launch();
    b.key = (await readFile(path.join(dataDir, 'bootstrap-key'), 'utf8')).trim();
  } catch (e) {
    await b.stop();
    throw e;
  }
  return b;
}

/** Creates an MQTT user and (once) an allow-all rule in the default set. */
export async function mqttUser(api, username = 'alice', password = 'password123') {
  await api.users.create({ username, password });
  const rules = await api.acl.list({ set: 'default' });
  if (!rules.items.some((r) => r.topic === '#' && r.permission === 'allow')) {
    await api.acl.create({ topic: '#', action: 'all', permission: 'allow' });
  }
  return { username, password };
}

/** An HS256 JWT of `claims`. */
export async function hs256(secret, claims) {
  const { createHmac } = await import('node:crypto');
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`;
}

/** Problems of `value` against an OpenAPI 3.0 `schema` (subset: $ref, type, nullable, enum, properties, required, additionalProperties, items). */
export function checkSchema(value, schema, doc, at = '$') {
  if (schema.$ref) {
    const name = schema.$ref.replace('#/components/schemas/', '');
    const target = doc.components.schemas[name];
    if (!target) return [`${at}: unknown $ref ${schema.$ref}`];
    return checkSchema(value, target, doc, at);
  }
  if (value === null) return schema.nullable ? [] : [`${at}: null but not nullable`];
  const errs = [];
  const type = Array.isArray(value) ? 'array' : typeof value;
  switch (schema.type) {
    case 'object':
      if (type !== 'object') return [`${at}: ${type}, want object`];
      for (const r of schema.required ?? []) if (!(r in value)) errs.push(`${at}: missing ${r}`);
      for (const [k, v] of Object.entries(value)) {
        const p = schema.properties?.[k];
        if (p) errs.push(...checkSchema(v, p, doc, `${at}.${k}`));
        else if (schema.additionalProperties === false) errs.push(`${at}: unexpected property ${k}`);
      }
      break;
    case 'array':
      if (type !== 'array') return [`${at}: ${type}, want array`];
      value.forEach((v, i) => errs.push(...checkSchema(v, schema.items, doc, `${at}[${i}]`)));
      break;
    case 'integer':
      if (!Number.isInteger(value)) errs.push(`${at}: ${JSON.stringify(value)}, want integer`);
      break;
    case 'number':
      if (type !== 'number') errs.push(`${at}: ${type}, want number`);
      break;
    case 'string':
    case 'boolean':
      if (type !== schema.type) errs.push(`${at}: ${type}, want ${schema.type}`);
      break;
    default:
      if (schema.type !== undefined) errs.push(`${at}: unsupported schema type ${schema.type}`);
  }
  if (schema.enum && !schema.enum.includes(value)) errs.push(`${at}: ${JSON.stringify(value)} not in ${JSON.stringify(schema.enum)}`);
  return errs;
}

/** A `fetch` that records every JSON answer: { method, url, status, body }. */
export function recordingFetch(log) {
  return async (url, init = {}) => {
    const res = await fetch(url, init);
    const text = await res.clone().text();
    let body;
    try { body = text ? JSON.parse(text) : undefined; } catch { body = text; }
    log.push({ method: (init.method ?? 'GET').toUpperCase(), url: String(url), status: res.status, body });
    return res;
  };
}
