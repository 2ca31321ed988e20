// RingmqApi against the real broker: every resource's CRUD, REST publish, token exchange, errors,
// retries; every JSON answer is recorded and checked against the OpenAPI document's schemas.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { RingmqApi, RingmqClient, RingmqError } from '../dist/index.js';
import { REPO, checkSchema, hs256, mqttUser, recordingFetch, startBroker, within } from './helpers.mjs';

const SECRET = 'an-hs256-secret-of-at-least-32-bytes!';
const ISSUER = 'https://idp.test/';
const doc = JSON.parse(readFileSync(path.join(REPO, 'src/control/api/openapi.json'), 'utf8'));
const log = [];
let broker;
let api;
const clients = [];

/** Awaits `promise`, which must reject with a RingmqError; returns it. */
async function refused(promise) {
  const err = await promise.then(() => null, (e) => e);
  assert.ok(err instanceof RingmqError, `want RingmqError, got ${err}`);
  assert.equal(typeof err.detail, 'string');
  assert.ok(err.detail.length > 0);
  return err;
}

before(async () => {
  broker = await startBroker({
    config: { 'auth.providers': [{ name: 'test-idp', org_id: 'default', issuer: ISSUER, algorithm: 'HS256', secret: SECRET }] },
  });
  api = new RingmqApi({ url: broker.httpUrl, key: broker.key, fetch: recordingFetch(log) });
});

after(async () => {
  await Promise.all(clients.map((c) => c.end(true).catch(() => {})));
  await broker?.stop();
});

describe('users', () => {
  test('create, get, list, update, delete', async () => {
    await api.aclSets.create({ name: 'team-a' });
    const u = await api.users.create({ username: 'bob.smith', password: 'password123', namespace: 'ns1', acl_sets: ['team-a'] });
    assert.equal(u.username, 'bob.smith');
    assert.equal(u.enabled, true);
    assert.equal(u.namespace, 'ns1');
    assert.ok(!('password' in u));
    assert.deepEqual((await api.users.get('bob.smith')).acl_sets, ['team-a']);
    await api.users.create({ username: 'carol', password: 'password123' });
    const page = await api.users.list({ limit: 1 });
    assert.equal(page.items.length, 1);
    assert.equal(typeof page.next_cursor, 'string');
    const all = [];
    for await (const x of api.users.all({ limit: 1 })) all.push(x.username);
    assert.deepEqual(all, ['bob.smith', 'carol']);
    const v = await api.users.update('bob.smith', { enabled: false, acl_sets: [], namespace: null });
    assert.equal(v.enabled, false);
    assert.deepEqual(v.acl_sets, []);
    assert.equal(v.namespace, null);
    await api.users.delete('carol');
    const err = await refused(api.users.get('carol'));
    assert.equal(err.status, 404);
    assert.equal(err.error, 'not_found');
    const dup = await refused(api.users.create({ username: 'bob.smith', password: 'password123' }));
    assert.equal(dup.status, 409);
    assert.equal(dup.error, 'conflict');
  });
});

describe('ACL sets and rules', () => {
  test('sets: create, get with rules, list, update, delete (409 while attached)', async () => {
    const s = await api.aclSets.create({ name: 'sensors', description: 'sensor topics' });
    assert.equal(s.rule_count, 0);
    const r = await api.acl.create({ topic: 'sensors/{username}/#', action: 'publish', permission: 'allow', set: 'sensors' });
    assert.match(r.id, /^rule_/);
    const got = await api.aclSets.get('sensors');
    assert.equal(got.rule_count, 1);
    assert.deepEqual(got.rules.map((x) => x.id), [r.id]);
    assert.equal((await api.aclSets.update('sensors', { description: 'changed' })).description, 'changed');
    assert.ok((await api.aclSets.list()).items.some((x) => x.name === 'default'));
    await api.users.create({ username: 'sensor1', password: 'password123', acl_sets: ['sensors'] });
    const busy = await refused(api.aclSets.delete('sensors'));
    assert.equal(busy.status, 409);
    await api.users.delete('sensor1');
    await api.aclSets.delete('sensors');
    assert.equal((await refused(api.aclSets.get('sensors'))).status, 404);
    assert.equal((await refused(api.aclSets.delete('default'))).status, 409);
  });

  test('rules: create, get, list by set, update, delete', async () => {
    const r = await api.acl.create({ topic: 'a/+/c', action: 'subscribe', permission: 'deny' });
    assert.equal(r.set, 'default');
    assert.equal((await api.acl.get(r.id)).topic, 'a/+/c');
    assert.ok((await api.acl.list({ set: 'default' })).items.some((x) => x.id === r.id));
    const u = await api.acl.update(r.id, { permission: 'allow', action: 'all', topic: 'a/#' });
    assert.deepEqual([u.permission, u.action, u.topic], ['allow', 'all', 'a/#']);
    await api.acl.delete(r.id);
    assert.equal((await refused(api.acl.get(r.id))).status, 404);
    const bad = await refused(api.acl.create({ topic: 'a/#/b', action: 'all', permission: 'allow' }));
    assert.equal(bad.status, 400);
    assert.equal(bad.error, 'bad_request');
  });
});

describe('keys', () => {
  test('create (secret once), get, list, update, revoke; a restricted key publishes only its topics', async () => {
    const k = await api.keys.create({ name: 'publisher', kind: 'restricted', permissions: [{ action: 'publish', topic: 'allowed/#' }] });
    assert.match(k.key, /^rk_/);
    assert.equal(k.prefix, k.key.slice(0, 10));
    const g = await api.keys.get(k.id);
    assert.ok(!('key' in g));
    assert.equal((await api.keys.update(k.id, { name: 'renamed' })).name, 'renamed');
    assert.ok((await api.keys.list()).items.some((x) => x.id === k.id));
    const rk = new RingmqApi({ url: broker.httpUrl, key: k.key, fetch: recordingFetch(log) });
    assert.equal((await rk.publish({ topic: 'allowed/x', payload: 'hi' })).status, 'accepted');
    const denied = await refused(rk.publish({ topic: 'other/x', payload: 'hi' }));
    assert.equal(denied.status, 403);
    const mgmt = await refused(rk.users.list());
    assert.equal(mgmt.status, 403);
    await api.keys.delete(k.id);
    assert.equal(typeof (await api.keys.get(k.id)).revoked_at, 'number');
    const gone = await refused(rk.publish({ topic: 'allowed/x', payload: 'hi' }));
    assert.equal(gone.status, 401);
    assert.equal(gone.error, 'unauthorized');
    const pk = await api.keys.create({ name: 'reader', kind: 'public' });
    assert.match(pk.key, /^pk_/);
    await api.keys.delete(pk.id);
  });
});

describe('sessions', () => {
  test('list by state, get, disconnect, delete', { timeout: 30_000 }, async () => {
    const creds = await mqttUser(api, 'sess-user');
    const clientId = 'dev/1 ü'; // `/`, a space and non-ASCII: percent-encoded in the path
    const c = new RingmqClient({ host: '127.0.0.1', port: broker.mqttPort, ...creds, clientId, clean: false, sessionExpiry: 300, reconnectPeriod: 0 });
    clients.push(c);
    await within(c.connect(), 10_000, 'connect');
    await c.subscribe('sess/#', () => {}, { qos: 1 });
    const active = await api.sessions.list({ state: 'active' });
    const s = active.items.find((x) => x.client_id === clientId);
    assert.ok(s, `no active session in ${JSON.stringify(active)}`);
    const searched = await api.sessions.list({ state: 'all', search: clientId });
    assert.deepEqual(searched.items.map((x) => x.client_id), [clientId]);
    assert.equal(s.connected, true);
    assert.equal(s.username, 'sess-user');
    assert.deepEqual(s.subscriptions, [{ filter: 'sess/#', qos: 1 }]);
    assert.equal((await api.sessions.get(clientId)).client_id, clientId);
    await api.sessions.disconnect(clientId);
    let off;
    for (let i = 0; i < 100 && !off; i++) {
      off = (await api.sessions.list({ state: 'disconnected' })).items.find((x) => x.client_id === clientId);
      if (!off) await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(off, 'the session is listed as disconnected');
    assert.equal(off.connected, false);
    assert.ok((await api.sessions.list({ state: 'all' })).items.some((x) => x.client_id === clientId));
    await api.sessions.delete(clientId);
    assert.equal((await refused(api.sessions.get(clientId))).status, 404);
    const bad = await refused(api.sessions.get('bad\u0001id'));
    assert.equal(bad.status, 400);
    assert.equal(bad.error, 'bad_request');
  });
});

describe('org and orgs', () => {
  test('org get and update', async () => {
    const o = await api.org.get();
    assert.equal(o.id, 'default');
    assert.match(o.usage.month, /^\d{4}-\d{2}$/);
    assert.equal((await api.org.update({ name: 'Default org' })).name, 'Default org');
  });

  test('orgs: create, get, list, update, delete; an org key cannot list orgs nor set its limits', async () => {
    const created = await api.orgs.create({ name: 'tenant-1', settings: { rate_limit_per_sec: 50 } });
    assert.match(created.org.id, /^org_[a-z0-9]{12}$/);
    assert.match(created.key.key, /^sk_/);
    assert.equal(created.org.settings.rate_limit_per_sec, 50);
    assert.equal((await api.orgs.get(created.org.id)).name, 'tenant-1');
    assert.ok((await api.orgs.list()).items.some((x) => x.id === created.org.id));
    const u = await api.orgs.update(created.org.id, { settings: { monthly_quota: 1234 } });
    assert.equal(u.settings.monthly_quota, 1234);
    const tenant = new RingmqApi({ url: broker.httpUrl, key: created.key.key, fetch: recordingFetch(log) });
    assert.equal((await tenant.org.get()).id, created.org.id);
    assert.equal((await refused(tenant.orgs.list())).status, 403);
    assert.equal((await refused(tenant.org.update({ settings: { monthly_quota: 1 } }))).error, 'forbidden');
    assert.equal((await refused(tenant.users.get('bob.smith'))).status, 404); // another org's user
    await api.orgs.delete(created.org.id);
    assert.equal((await refused(api.orgs.get(created.org.id))).status, 404);
  });
});

describe('token exchange', () => {
  test('a JWT becomes MQTT credentials, once', { timeout: 20_000 }, async () => {
    const now = Math.floor(Date.now() / 1000);
    const token = await hs256(SECRET, { iss: ISSUER, sub: 'device-7', exp: now + 600, iat: now, jti: randomUUID() });
    const cred = await api.tokenExchange(token, 'test-idp');
    assert.match(cred.username, /^tx_.*@default$/);
    assert.deepEqual(cred.allowed, { publish: ['device-7/#'], subscribe: ['device-7/#'] });
    const c = new RingmqClient({ host: '127.0.0.1', port: broker.mqttPort, username: cred.username, password: cred.password, reconnectPeriod: 0 });
    clients.push(c);
    await within(c.connect(), 10_000, 'connect with exchanged credentials');
    await c.publish('device-7/t', 'ok', { qos: 1 });
    await c.end();
    const again = await refused(api.tokenExchange(token));
    assert.equal(again.status, 409);
    assert.equal(again.error, 'token_replayed');
    const bad = await refused(api.tokenExchange('not.a.jwt'));
    assert.equal(bad.status, 401);
  });
});

describe('REST publish', () => {
  test('publish at QoS 0 and 1, bytes, idempotency, batch', { timeout: 20_000 }, async () => {
    assert.deepEqual(await api.publish({ topic: 'rest/a', payload: 'x' }), { status: 'accepted', topic: 'rest/a', qos: 0, replayed: false });
    const q1 = await api.publish({ topic: 'rest/b', payload: { n: 1 }, qos: 1 });
    assert.equal(q1.status, 'queued');
    assert.equal(q1.matched, 0);
    assert.equal((await api.publish({ topic: 'rest/c', payload: new Uint8Array([0, 1, 255]), qos: 1 })).status, 'queued');
    const key = randomUUID();
    const first = await api.publish({ topic: 'rest/idem', payload: 'once', qos: 1 }, { idempotencyKey: key });
    const second = await api.publish({ topic: 'rest/idem', payload: 'once', qos: 1 }, { idempotencyKey: key });
    assert.equal(first.replayed, false);
    assert.equal(second.replayed, true);
    const changed = await refused(api.publish({ topic: 'rest/idem', payload: 'other', qos: 1 }, { idempotencyKey: key }));
    assert.equal(changed.status, 422);
    const batch = await api.publishBatch([
      { topic: 'rest/batch/1', payload: 'a', qos: 1 },
      { topic: 'rest/#', payload: 'wildcard' },
      { topic: 'rest/batch/2', payload: [1, 2] },
    ], { idempotencyKey: randomUUID() });
    assert.deepEqual(batch.results.map((r) => r.status), [200, 400, 202]);
    assert.equal(batch.results[1].error, 'bad_request');
    const qos2 = await refused(api.publish({ topic: 'rest/x', payload: 'x', qos: 2 }));
    assert.equal(qos2.status, 400);
  });
});

describe('errors and retries', () => {
  test('RingmqError carries status, error and detail (401, 400, 404)', async () => {
    const anon = new RingmqApi({ url: broker.httpUrl, key: 'sk_not_a_key', retries: 0, fetch: recordingFetch(log) });
    const e401 = await refused(anon.users.list());
    assert.deepEqual([e401.status, e401.error], [401, 'unauthorized']);
    assert.ok(e401 instanceof Error);
    assert.match(e401.message, /401 unauthorized/);
    const e400 = await refused(api.users.create({ username: 'a b', password: 'password123' }));
    assert.deepEqual([e400.status, e400.error], [400, 'bad_request']);
    const e404 = await refused(api.users.get('nobody'));
    assert.deepEqual([e404.status, e404.error], [404, 'not_found']);
    const enc = await refused(api.users.get('../users'));
    assert.ok([400, 404].includes(enc.status), `'../users' percent-encoded: ${enc.status}`);
  });

  test('429 is retried after Retry-After; with retries: 0 it is thrown', { timeout: 30_000 }, async () => {
    const { org, key } = await api.orgs.create({ name: 'slow', settings: { rate_limit_per_sec: 1, rate_burst: 1 } });
    const noRetry = new RingmqApi({ url: broker.httpUrl, key: key.key, retries: 0 });
    await noRetry.publish({ topic: 't', payload: 'first' });
    const e = await refused(noRetry.publish({ topic: 't', payload: 'second' }));
    assert.deepEqual([e.status, e.error], [429, 'rate_limited']);
    assert.ok(e.retryAfter >= 0, `Retry-After ${e.retryAfter}`);
    const retrying = new RingmqApi({ url: broker.httpUrl, key: key.key, retries: 5 });
    const t0 = Date.now();
    await retrying.publish({ topic: 't', payload: 'third' });
    await retrying.publish({ topic: 't', payload: 'fourth' });
    assert.ok(Date.now() - t0 >= 500, 'waited for the bucket');
    await api.orgs.delete(org.id);
  });

  test('retries honour Retry-After (stub fetch)', async () => {
    const calls = [];
    const fake = async (url, init) => {
      calls.push(Date.now());
      if (calls.length < 3) {
        return new Response(JSON.stringify({ error: 'rate_limited', detail: 'slow down' }), { status: 429, headers: { 'Retry-After': '1' } });
      }
      return new Response(JSON.stringify({ items: [], next_cursor: null }), { status: 200 });
    };
    const a = new RingmqApi({ url: 'http://127.0.0.1:9', key: 'sk_x', retries: 2, fetch: fake });
    assert.deepEqual(await a.users.list(), { items: [], next_cursor: null });
    assert.equal(calls.length, 3);
    assert.ok(calls[1] - calls[0] >= 950 && calls[2] - calls[1] >= 950, `gaps ${calls[1] - calls[0]}, ${calls[2] - calls[1]}`);
    calls.length = 0;
    const b = new RingmqApi({ url: 'http://127.0.0.1:9', key: 'sk_x', retries: 1, fetch: fake });
    const e = await refused(b.users.list());
    assert.deepEqual([e.status, e.error, e.detail, e.retryAfter], [429, 'rate_limited', 'slow down', 1]);
  });
});

describe('OpenAPI document', () => {
  test('the served document has the same paths and methods as the repository\'s', async () => {
    const served = await api.openapi();
    const ops = (d) => Object.entries(d.paths).flatMap(([p, item]) => Object.keys(item).map((m) => `${m} ${p}`)).sort();
    assert.deepEqual(ops(served), ops(doc));
    assert.equal(doc.openapi, '3.0.3');
  });

  test('every recorded answer matches its schema, and every operation was exercised', () => {
    const routes = Object.entries(doc.paths).flatMap(([p, item]) => Object.entries(item).map(([m, op]) => ({
      method: m.toUpperCase(), path: p, op, re: new RegExp(`^${p.replace(/\{[^}]+\}/g, '[^/]+')}$`),
    })));
    const covered = new Set();
    const problems = [];
    let checked = 0;
    for (const rec of log) {
      const { pathname } = new URL(rec.url);
      const route = routes.find((r) => r.method === rec.method && r.re.test(pathname));
      if (!route) continue; // /v1/publish, /v1/publish/batch: not in the document
      const resp = route.op.responses[String(rec.status)];
      if (!resp) { problems.push(`${rec.method} ${pathname}: status ${rec.status} not documented`); continue; }
      const r = resp.$ref ? doc.components.responses[resp.$ref.split('/').pop()] : resp;
      const schema = r.content?.['application/json']?.schema;
      if (!schema) {
        if (rec.body !== undefined) problems.push(`${rec.method} ${pathname} ${rec.status}: a body where none is documented`);
      } else {
        problems.push(...checkSchema(rec.body, schema, doc).map((e) => `${rec.method} ${pathname} ${rec.status}: ${e}`));
      }
      checked++;
      if (rec.status < 300) covered.add(`${route.method} ${route.path}`);
    }
    assert.deepEqual(problems, []);
    const missing = routes.map((r) => `${r.method} ${r.path}`).filter((k) => !covered.has(k));
    assert.deepEqual(missing, [], 'operations without a checked 2xx answer');
    assert.ok(checked > 50, `only ${checked} answers checked`);
  });
});
