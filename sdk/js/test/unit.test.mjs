// Pure functions: payload decoding and encoding, topic matching, REST bodies, Retry-After.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodePayload, encodePayload, fromBase64, restBody, retryAfterSeconds, toBase64, topicMatches, brokerUrl } from '../dist/index.js';

const enc = (s) => new TextEncoder().encode(s);

test('decodePayload: JSON value, else UTF-8 string, else bytes', () => {
  assert.deepEqual(decodePayload(enc('{"a":[1,true,null]}')), { a: [1, true, null] });
  assert.equal(decodePayload(enc('12.5')), 12.5);
  assert.equal(decodePayload(enc('"quoted"')), 'quoted');
  assert.equal(decodePayload(enc('plain ✓')), 'plain ✓');
  assert.equal(decodePayload(enc('')), '');
  assert.equal(decodePayload(enc('{not json')), '{not json');
  const b = decodePayload(new Uint8Array([0xff, 0x00, 0x80]));
  assert.ok(b instanceof Uint8Array);
  assert.deepEqual([...b], [0xff, 0x00, 0x80]);
});

test('encodePayload: strings as UTF-8, bytes as they are, values as JSON', () => {
  assert.deepEqual([...encodePayload('é')], [0xc3, 0xa9]);
  const u = new Uint8Array([1, 2]);
  assert.equal(encodePayload(u), u);
  assert.equal(new TextDecoder().decode(encodePayload({ x: [1] })), '{"x":[1]}');
  assert.equal(new TextDecoder().decode(encodePayload(null)), 'null');
});

test('base64 both ways', () => {
  const bytes = new Uint8Array(70_000).map((_, i) => i % 256);
  assert.deepEqual(fromBase64(toBase64(bytes)), bytes);
  assert.equal(toBase64(new Uint8Array([0, 255])), 'AP8=');
});

test('topicMatches', () => {
  assert.ok(topicMatches('a/#', 'a'));
  assert.ok(topicMatches('a/#', 'a/b/c'));
  assert.ok(topicMatches('a/+/c', 'a/b/c'));
  assert.ok(!topicMatches('a/+/c', 'a/b/d'));
  assert.ok(!topicMatches('a/+', 'a/b/c'));
  assert.ok(topicMatches('#', 'x/y'));
  assert.ok(!topicMatches('#', '$SYS/x'));
  assert.ok(topicMatches('$share/g/a/+', 'a/b'));
});

test('restBody: bytes as payload_base64, values as they are', () => {
  assert.deepEqual(restBody({ topic: 't', payload: new Uint8Array([0, 255]), qos: 1 }), { topic: 't', payload_base64: 'AP8=', qos: 1 });
  assert.deepEqual(restBody({ topic: 't', payload: { a: 1 } }), { topic: 't', payload: { a: 1 } });
  assert.deepEqual(restBody({ topic: 't', payload: 's', correlation_data: new Uint8Array([1]) }), { topic: 't', payload: 's', correlation_data_base64: 'AQ==' });
});

test('retryAfterSeconds and brokerUrl', () => {
  assert.equal(retryAfterSeconds('3'), 3);
  assert.equal(retryAfterSeconds(null), undefined);
  assert.ok(retryAfterSeconds(new Date(Date.now() + 5000).toUTCString()) > 3);
  assert.equal(brokerUrl({ host: 'h', port: 1 }), 'mqtt://h:1');
  assert.equal(brokerUrl({ host: 'h', tls: true }), 'mqtts://h:8883');
  assert.equal(brokerUrl({ host: '::1', port: 2 }), 'mqtt://[::1]:2');
  assert.equal(brokerUrl({ url: 'ws://h:8080/mqtt' }), 'ws://h:8080/mqtt');
});
