// RingmqClient against the real broker: TCP and WebSocket round trips with JSON, string and byte
// payloads, refusals, and resubscription after the connection is dropped or the broker restarts.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { RingmqApi, RingmqClient, RingmqMqttError } from '../dist/index.js';
import { mqttUser, sleep, startBroker, waitFor, within } from './helpers.mjs';

let broker;
let api;
let creds;
const clients = [];

/** A connected client on `transport` (`tcp` or `ws`), ended after the tests. */
async function connected(transport, extra = {}) {
  const opts = transport === 'ws'
    ? { url: `ws://127.0.0.1:${broker.httpPort}/mqtt`, ...creds, ...extra }
    : { host: '127.0.0.1', port: broker.mqttPort, ...creds, ...extra };
  const c = new RingmqClient(opts);
  clients.push(c);
  await within(c.connect(), 10_000, `connect over ${transport}`);
  return c;
}

/** Subscribes and returns the array messages are pushed to. */
async function collect(client, filter) {
  const got = [];
  await client.subscribe(filter, (topic, message) => got.push({ topic, message }));
  return got;
}

before(async () => {
  broker = await startBroker();
  api = new RingmqApi({ url: broker.httpUrl, key: broker.key });
  creds = await mqttUser(api);
});

after(async () => {
  await Promise.all(clients.map((c) => c.end(true).catch(() => {})));
  await broker?.stop();
});

for (const transport of ['tcp', 'ws']) {
  describe(`round trip over ${transport}`, () => {
    test('JSON, string and bytes payloads are decoded', { timeout: 20_000 }, async () => {
      const sub = await connected(transport);
      const pub = await connected(transport);
      const got = await collect(sub, `rt/${transport}/#`);
      await pub.publish(`rt/${transport}/json`, { a: 1, b: ['x', null] }, { qos: 1 });
      await pub.publish(`rt/${transport}/text`, 'héllo ✓', { qos: 1 });
      await pub.publish(`rt/${transport}/bytes`, new Uint8Array([0, 255, 1, 128]), { qos: 0 });
      await pub.publish(`rt/${transport}/num`, 42);
      await waitFor(() => got.length >= 4, 5000, 'four messages');
      const by = Object.fromEntries(got.map((m) => [m.topic.split('/').pop(), m.message]));
      assert.deepEqual(by.json, { a: 1, b: ['x', null] });
      assert.equal(by.text, 'héllo ✓');
      assert.ok(by.bytes instanceof Uint8Array, `bytes decoded as ${typeof by.bytes}`);
      assert.deepEqual([...by.bytes], [0, 255, 1, 128]);
      assert.equal(by.num, 42);
    });

    test('retained message reaches a later subscriber', { timeout: 20_000 }, async () => {
      const pub = await connected(transport);
      await pub.publish(`ret/${transport}`, 'kept', { qos: 1, retain: true });
      const sub = await connected(transport);
      const got = await collect(sub, `ret/${transport}`);
      await waitFor(() => got.length === 1, 5000, 'the retained message');
      assert.equal(got[0].message, 'kept');
      await pub.publish(`ret/${transport}`, '', { qos: 1, retain: true }); // clear it
    });
  });
}

test('a wrong password is refused with RingmqMqttError', { timeout: 20_000 }, async () => {
  for (const protocolVersion of [5, 4]) {
    const c = new RingmqClient({ host: '127.0.0.1', port: broker.mqttPort, username: creds.username, password: 'wrong-password', protocolVersion });
    clients.push(c);
    const err = await within(c.connect().then(() => null, (e) => e), 10_000, 'refused connect');
    assert.ok(err instanceof RingmqMqttError, `got ${err}`);
    assert.match(err.message, /refused/);
    assert.ok([0x86, 0x87, 4, 5].includes(err.reasonCode), `reason ${err.reasonCode}`);
  }
});

test('an unreachable broker rejects connect', { timeout: 20_000 }, async () => {
  const c = new RingmqClient({ host: '127.0.0.1', port: 1, ...creds });
  const err = await within(c.connect().then(() => null, (e) => e), 10_000, 'unreachable connect');
  assert.ok(err instanceof RingmqMqttError, `got ${err}`);
});

test('a refused subscription rejects', { timeout: 20_000 }, async () => {
  await api.users.create({ username: 'limited', password: 'password123', acl_sets: [] });
  await api.acl.create({ topic: 'secret/#', action: 'all', permission: 'deny' });
  const c = await connected('tcp', { username: 'limited', password: 'password123' });
  const err = await c.subscribe('secret/x', () => {}).then(() => null, (e) => e);
  assert.ok(err instanceof RingmqMqttError, `got ${err}`);
  assert.ok(err.reasonCode >= 0x80);
});

for (const transport of ['tcp', 'ws']) {
  test(`resubscribes after POST /v1/sessions/{id}/disconnect (${transport})`, { timeout: 30_000 }, async () => {
    const clientId = `resub/${transport}`; // a `/` to exercise percent-encoding
    const sub = await connected(transport, { clientId, reconnectPeriod: 200 });
    const pub = await connected(transport);
    const got = await collect(sub, `resub/${transport}/#`);
    let reconnects = 0;
    sub.on('resubscribe', () => { reconnects++; });
    for (let round = 1; round <= 2; round++) {
      await api.sessions.disconnect(clientId);
      await waitFor(() => reconnects >= round, 10_000, `resubscription ${round}`);
      const s = await api.sessions.get(clientId);
      assert.deepEqual(s.subscriptions.map((x) => x.filter), [`resub/${transport}/#`]);
      await pub.publish(`resub/${transport}/r${round}`, { round }, { qos: 1 });
      await waitFor(() => got.some((m) => m.message?.round === round), 5000, `message after reconnect ${round}`);
    }
  });
}

test('resubscribes after a broker restart (same data dir)', { timeout: 60_000 }, async () => {
  const sub = await connected('tcp', { clientId: 'restart-sub', reconnectPeriod: 200 });
  const got = await collect(sub, 'restart/#');
  let resubscribed = 0;
  sub.on('resubscribe', () => { resubscribed++; });
  await broker.restart();
  await waitFor(() => resubscribed >= 1, 15_000, 'resubscription after restart');
  const pub = await connected('tcp');
  await pub.publish('restart/x', 'after restart', { qos: 1 });
  await waitFor(() => got.some((m) => m.message === 'after restart'), 5000, 'message after restart');
  await sleep(10);
});

test('a kept session (clean: false) is not resubscribed, and still receives', { timeout: 30_000 }, async () => {
  const clientId = 'kept-session';
  const sub = await connected('tcp', { clientId, clean: false, sessionExpiry: 300, reconnectPeriod: 200 });
  const pub = await connected('tcp');
  const got = await collect(sub, 'kept/#');
  let connects = 0;
  let resubscribed = 0;
  sub.on('connect', () => { connects++; });
  sub.on('resubscribe', () => { resubscribed++; });
  await api.sessions.disconnect(clientId);
  await waitFor(() => connects >= 1, 10_000, 'the reconnect');
  await pub.publish('kept/x', 'still here', { qos: 1 });
  await waitFor(() => got.some((m) => m.message === 'still here'), 5000, 'the message on the kept session');
  assert.equal(resubscribed, 0);
  await sub.end();
  await api.sessions.delete(clientId);
});
