// MQTT.js against ringmq over TCP and over WebSocket (`GET /mqtt`, subprotocol `mqtt`), at MQTT
// 3.1.1 and 5.0, and across transports. Each case: a subscriber with a wildcard, a publisher on a
// second connection (so on the other shard), QoS 0/1/2 in order with the right QoS, a v5 user
// property passed through, a retained message on a late subscribe, clean disconnects (no will).
//
//   node mqttjs.mjs --mqtt-port 1883 --http-port 8080 [--cases all|tcp|ws] [--timeout 60]
//   (or RINGMQ_MQTT_PORT / RINGMQ_HTTP_PORT). `--cases tcp`: only TCP to TCP; `ws`: every case
//   with a WebSocket end. Exits 0 when every selected case passes.
import http from 'node:http';
import mqtt from 'mqtt';
import { fail, hardTimeout, settings, sleep, waitFor, within } from './common.mjs';

const cfg = settings(['mqttPort', 'httpPort']);
hardTimeout(cfg.timeoutSecs, 'mqttjs.mjs');

const STEP_MS = 5000;
const RUN = `${process.pid.toString(36)}${Date.now().toString(36)}`; // topics unique per run
const url = (transport) =>
  transport === 'tcp' ? `mqtt://${cfg.host}:${cfg.mqttPort}` : `ws://${cfg.host}:${cfg.httpPort}/mqtt`;

/** What the HTTP port answers to a WebSocket upgrade of /mqtt (for a clear failure message). */
function probeUpgrade() {
  return new Promise((resolve) => {
    const req = http.get({
      host: cfg.host, port: cfg.httpPort, path: '/mqtt', timeout: 2000,
      headers: {
        Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Protocol': 'mqtt',
      },
    });
    req.on('upgrade', (res, socket) => { socket.destroy(); resolve(`HTTP ${res.statusCode}`); });
    req.on('response', (res) => { res.resume(); resolve(`HTTP ${res.statusCode}`); });
    req.on('timeout', () => req.destroy(new Error('no answer within 2 s')));
    req.on('error', (e) => resolve(e.message));
  });
}

/** Connects (no reconnects); rejects with the reason when no CONNACK arrives. */
async function connect(transport, version, clientId, extra = {}) {
  const client = mqtt.connect(url(transport), {
    protocolVersion: version, clientId, clean: true, reconnectPeriod: 0, connectTimeout: STEP_MS, ...extra,
  });
  try {
    await within(new Promise((resolve, reject) => {
      client.once('connect', resolve);
      client.once('error', reject);
      client.once('close', () => reject(new Error('connection closed before CONNACK')));
    }), STEP_MS, 'CONNACK');
    return client;
  } catch (e) {
    client.end(true);
    let reason = `${clientId}: connect to ${url(transport)} (v${version}) failed: ${e.message}`;
    if (transport === 'ws') {
      reason += `; the WebSocket upgrade of GET /mqtt (subprotocol mqtt) is answered with ${await probeUpgrade()}`;
    }
    throw new Error(reason);
  }
}

async function runCase({ sub: subT, pub: pubT, version }) {
  const tag = `${subT}-${pubT}-v${version}`;
  const base = `js/${RUN}/${tag}`;
  const clients = [];
  try {
    const sub = await connect(subT, version, `sub-${tag}`);
    clients.push(sub);
    const got = [];
    sub.on('message', (topic, payload, packet) => got.push({ topic, payload: payload.toString(), packet }));
    const granted = await within(sub.subscribeAsync(`${base}/+/#`, { qos: 2 }), STEP_MS, 'SUBACK');
    if (granted[0]?.qos !== 2) throw new Error(`subscribe ${base}/+/# granted ${JSON.stringify(granted)}, want QoS 2`);

    const will = { topic: `${base}/will/gone`, payload: Buffer.from('unclean'), qos: 1, retain: false };
    const pub = await connect(pubT, version, `pub-${tag}`, { will });
    clients.push(pub);
    const props = version === 5 ? { properties: { userProperties: { origin: 'mqtt.js', case: tag } } } : {};
    for (const qos of [0, 1, 2]) {
      await within(pub.publishAsync(`${base}/data/q${qos}`, `payload ${qos}`, { qos, ...props }), STEP_MS,
        `publish QoS ${qos} acknowledged`);
    }
    const seen = () => `; got ${JSON.stringify(got.map((m) => m.topic))}`;
    await waitFor(() => got.length >= 3, STEP_MS, 'three messages', seen);
    got.forEach((m, qos) => {
      const want = `${base}/data/q${qos}`;
      if (m.topic !== want || m.payload !== `payload ${qos}`) {
        throw new Error(`message ${qos + 1}: ${m.topic} ${JSON.stringify(m.payload)}, want ${want} (in order)${seen()}`);
      }
      if (m.packet.qos !== qos) throw new Error(`${m.topic} arrived at QoS ${m.packet.qos}, want ${qos}`);
      if (m.packet.retain) throw new Error(`${m.topic} arrived with retain set`);
      if (version === 5) {
        const up = m.packet.properties?.userProperties;
        if (up?.origin !== 'mqtt.js' || up?.case !== tag) {
          throw new Error(`${m.topic}: user properties ${JSON.stringify(up)}, want origin=mqtt.js case=${tag}`);
        }
      }
    });

    // Retained: published now, seen by a subscription made afterwards (on the subscriber's connection).
    await within(pub.publishAsync(`${base}/state/last`, 'kept', { qos: 1, retain: true }), STEP_MS, 'retained publish');
    await waitFor(() => got.length >= 4, STEP_MS, 'the live copy of the retained publish', seen);
    if (got[3].packet.retain) throw new Error('the live copy of a retained publish arrived with retain set');
    const late = await connect(subT, version, `late-${tag}`);
    clients.push(late);
    const lateGot = [];
    late.on('message', (topic, payload, packet) => lateGot.push({ topic, payload: payload.toString(), packet }));
    await within(late.subscribeAsync(`${base}/state/#`, { qos: 1 }), STEP_MS, 'late SUBACK');
    await waitFor(() => lateGot.length >= 1, STEP_MS, 'the retained message on a late subscribe');
    const r = lateGot[0];
    if (r.topic !== `${base}/state/last` || r.payload !== 'kept' || !r.packet.retain || r.packet.qos !== 1) {
      throw new Error(`late subscribe got ${r.topic} ${JSON.stringify(r.payload)} retain=${r.packet.retain} ` +
        `qos=${r.packet.qos}, want ${base}/state/last "kept" retain=true qos=1`);
    }

    // Clean disconnect: DISCONNECT is sent, so the publisher's will must not be published.
    await within(pub.endAsync(), STEP_MS, 'publisher disconnect');
    await within(late.endAsync(), STEP_MS, 'late subscriber disconnect');
    await sleep(300);
    const wills = got.filter((m) => m.topic.includes('/will/'));
    if (wills.length) throw new Error(`will published after a clean disconnect: ${wills[0].topic}`);
    await within(sub.endAsync(), STEP_MS, 'subscriber disconnect');
    if (sub.connected || pub.connected) throw new Error('a client still reports connected after end()');
  } finally {
    for (const c of clients) c.end(true);
  }
}

const allCases = [
  { sub: 'tcp', pub: 'tcp', version: 4 },
  { sub: 'tcp', pub: 'tcp', version: 5 },
  { sub: 'ws', pub: 'ws', version: 4 },
  { sub: 'ws', pub: 'ws', version: 5 },
  { sub: 'tcp', pub: 'ws', version: 5 },
  { sub: 'ws', pub: 'tcp', version: 5 },
  { sub: 'tcp', pub: 'ws', version: 4 },
  { sub: 'ws', pub: 'tcp', version: 4 },
];
const which = cfg.cases ?? 'all';
const cases = allCases.filter((c) => which === 'all' || (which === 'tcp') === (c.sub === 'tcp' && c.pub === 'tcp'));
if (!['all', 'tcp', 'ws'].includes(which)) fail(`--cases ${which}: want all, tcp or ws`);
const failures = [];
for (const c of cases) {
  const name = `subscriber ${c.sub}, publisher ${c.pub}, MQTT ${c.version === 5 ? '5.0' : '3.1.1'}`;
  const started = Date.now();
  try {
    await runCase(c);
    console.log(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (e) {
    console.log(`FAIL ${name}: ${e.message}`);
    failures.push(name);
  }
}
if (failures.length) fail(`${failures.length} of ${cases.length} cases failed: ${failures.join('; ')}`);
console.log(`all ${cases.length} cases passed`);
process.exit(0);
