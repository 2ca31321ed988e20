// api.stream() against the real broker: SSE and WebSocket yield REST publishes; SSE resumes with
// Last-Event-ID; refusals are RingmqErrors.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { RingmqApi, RingmqError } from '../dist/index.js';
import { sleep, startBroker, within } from './helpers.mjs';

let broker;
let api;

before(async () => {
  broker = await startBroker();
  api = new RingmqApi({ url: broker.httpUrl, key: broker.key });
});

after(async () => {
  await broker?.stop();
});

/** Opens a stream, waits until it is open, and returns { stream, next() }. */
async function open(options) {
  let opened;
  const isOpen = new Promise((r) => { opened = r; });
  const stream = api.stream({ ...options, onOpen: () => opened() });
  const it = stream[Symbol.asyncIterator]();
  const first = it.next(); // starts the request
  await within(Promise.race([isOpen, first]), 5000, `${options.transport ?? 'sse'} stream open`);
  await sleep(200); // let the subscription reach the shard
  let pending = first;
  return {
    stream,
    next: async () => {
      const p = pending ?? it.next();
      pending = undefined;
      const r = await within(p, 5000, 'a stream message');
      assert.equal(r.done, false);
      return r.value;
    },
  };
}

for (const transport of ['sse', 'websocket']) {
  test(`${transport}: a REST publish arrives, decoded`, { timeout: 20_000 }, async () => {
    const { stream, next } = await open({ topic: `st/${transport}/#`, transport });
    try {
      await api.publish({ topic: `st/${transport}/json`, payload: { hello: 'wörld' }, qos: 1 });
      const m1 = await next();
      assert.equal(m1.topic, `st/${transport}/json`);
      assert.deepEqual(m1.message, { hello: 'wörld' });
      assert.equal(m1.is_base64, false);
      assert.equal(m1.retained, false);
      assert.equal(m1.qos, 1);
      assert.equal(m1.org_id, 'default');
      assert.equal(transport === 'sse', typeof m1.id === 'string');
      await api.publish({ topic: `st/${transport}/bin`, payload: new Uint8Array([0, 200, 7]), qos: 1 });
      const m2 = await next();
      assert.equal(m2.is_base64, true);
      assert.deepEqual([...m2.message], [0, 200, 7]);
      await api.publish({ topic: `st/${transport}/text`, payload: 'plain text', qos: 1 });
      assert.equal((await next()).message, 'plain text');
    } finally {
      stream.close();
    }
  });

  test(`${transport}: a bad key is a RingmqError 401`, { timeout: 10_000 }, async () => {
    const bad = new RingmqApi({ url: broker.httpUrl, key: 'sk_wrong' });
    const err = await within((async () => { for await (const _ of bad.stream({ transport })) { /* nothing */ } })().then(() => null, (e) => e), 5000, 'refusal');
    assert.ok(err instanceof RingmqError, `got ${err}`);
    assert.equal(err.status, 401);
    assert.equal(err.error, 'unauthorized');
  });
}

test('sse: `break` ends the stream; lastEventId resumes after the last message', { timeout: 20_000 }, async () => {
  const { stream, next } = await open({ topic: 'resume/#' });
  await api.publish({ topic: 'resume/1', payload: 'one', qos: 1 });
  const m1 = await next();
  assert.equal(m1.message, 'one');
  assert.equal(stream.lastEventId, m1.id);
  stream.close();
  await api.publish({ topic: 'resume/2', payload: 'two', qos: 1 });
  let gaps = 0;
  const again = api.stream({ topic: 'resume/#', lastEventId: m1.id, onGap: () => { gaps++; } });
  const got = [];
  await within((async () => {
    for await (const m of again) {
      got.push(m.message);
      break;
    }
  })(), 5000, 'the resumed message');
  assert.deepEqual(got, ['two']);
  assert.equal(gaps, 0);
  assert.equal(again.closed, true);
});

test('sse: an unknown Last-Event-ID starts fresh with a gap', { timeout: 20_000 }, async () => {
  let gap;
  const s = api.stream({ topic: 'fresh/#', lastEventId: 'bogus', onGap: (d) => { gap = d; }, onOpen: () => {} });
  const it = s[Symbol.asyncIterator]();
  const first = it.next();
  await sleep(300);
  await api.publish({ topic: 'fresh/1', payload: 'x', qos: 1 });
  const r = await within(first, 5000, 'the message');
  assert.equal(r.value.message, 'x');
  assert.equal(typeof gap, 'string');
  s.close();
});

for (const transport of ['sse', 'websocket']) {
  test(`${transport}: a revoked key ends the stream with a RingmqError`, { timeout: 20_000 }, async () => {
    const k = await api.keys.create({ name: `reader-${transport}`, kind: 'public' });
    const reader = new RingmqApi({ url: broker.httpUrl, key: k.key });
    let opened;
    const isOpen = new Promise((r) => { opened = r; });
    const s = reader.stream({ transport, topic: 'rev/#', onOpen: () => opened() });
    const done = (async () => { for await (const _ of s) { /* nothing */ } })().then(() => null, (e) => e);
    await within(isOpen, 5000, 'open');
    await api.keys.delete(k.id);
    const err = await within(done, 5000, 'the end of the stream');
    assert.ok(err instanceof RingmqError, `got ${err}`);
    assert.ok([401, 403].includes(err.status), `status ${err.status}`);
  });
}

test('sse: reconnects by itself after the broker restarts', { timeout: 40_000 }, async () => {
  let gaps = 0;
  const s = api.stream({ topic: 'rc/#', reconnectDelayMs: 100, onGap: () => { gaps++; } });
  const got = [];
  const reading = (async () => { for await (const m of s) got.push(m.message); })();
  await sleep(300);
  await api.publish({ topic: 'rc/1', payload: 'before', qos: 1 });
  await within((async () => { while (!got.includes('before')) await sleep(20); })(), 5000, 'before');
  await broker.restart();
  const deadline = Date.now() + 15_000;
  while (!got.includes('after') && Date.now() < deadline) {
    await api.publish({ topic: 'rc/2', payload: 'after', qos: 1 });
    await sleep(200);
  }
  s.close();
  await within(reading, 5000, 'the end of the iteration');
  assert.ok(got.includes('after'), `got ${JSON.stringify(got)}`);
  assert.ok(gaps >= 1, 'a fresh stream after the restart starts with a gap');
});
