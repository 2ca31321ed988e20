import mqtt from 'mqtt';
import { decodePayload, encodePayload } from './payload.js';
import { topicMatches } from './topic.js';
/** An MQTT refusal: a CONNACK, SUBACK or PUBACK reason code, or a connection that failed before CONNACK. */
export class RingmqMqttError extends Error {
    /** The MQTT reason code (v5) or return code (v3.1.1), when the broker sent one. */
    reasonCode;
    /** Builds the error from a message and an optional reason code. */
    constructor(message, reasonCode) {
        super(message);
        this.name = 'RingmqMqttError';
        if (reasonCode !== undefined)
            this.reasonCode = reasonCode;
    }
}
const g = globalThis;
/** Pages and web workers: WebSocket only. */
const isBrowser = typeof g.document !== 'undefined' || typeof g.WorkerGlobalScope !== 'undefined';
/** The broker URL an options object designates (WebSocket `/mqtt` in browsers). */
export function brokerUrl(o) {
    if (o.url)
        return o.url;
    const host = o.host ?? '127.0.0.1';
    const h = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
    if (isBrowser)
        return `${o.tls ? 'wss' : 'ws'}://${h}:${o.port ?? (o.tls ? 8443 : 8080)}/mqtt`;
    return `${o.tls ? 'mqtts' : 'mqtt'}://${h}:${o.port ?? (o.tls ? 8883 : 1883)}`;
}
const CONNACK_REASONS = {
    1: 'unacceptable protocol version', 2: 'identifier rejected', 3: 'server unavailable',
    4: 'bad username or password', 5: 'not authorized', 0x80: 'unspecified error', 0x84: 'unsupported protocol version',
    0x85: 'client identifier not valid', 0x86: 'bad username or password', 0x87: 'not authorized',
    0x88: 'server unavailable', 0x89: 'server busy', 0x8a: 'banned', 0x97: 'quota exceeded',
};
/**
 * An MQTT client of ringmq over MQTT.js: TCP or TLS in Node, WebSocket (`/mqtt`) in browsers or with a
 * `ws://` URL. Create it, then `await client.connect()`. It reconnects on its own and, when the broker
 * did not keep the session, subscribes again to every filter subscribed through it.
 */
export class RingmqClient {
    /** The options given. */
    options;
    /** The URL connected to. */
    url;
    /** The client id used. */
    clientId;
    client;
    subs = new Map();
    listeners = new Map();
    connecting;
    /** Prepares a client; nothing is sent before {@link connect}. */
    constructor(options = {}) {
        this.options = { ...options };
        this.url = brokerUrl(options);
        this.clientId = options.clientId ?? `ringmq-js-${Math.random().toString(16).slice(2, 14)}`;
    }
    /** The underlying MQTT.js client (after {@link connect}). */
    get mqtt() {
        return this.client;
    }
    /** Whether the client is connected now. */
    get connected() {
        return this.client?.connected ?? false;
    }
    /** Listens to a client event (`connect`, `reconnect`, `close`, `offline`, `error`, `end`, `resubscribe`). */
    on(event, listener) {
        let set = this.listeners.get(event);
        if (!set)
            this.listeners.set(event, (set = new Set()));
        set.add(listener);
        return this;
    }
    /** Stops listening. */
    off(event, listener) {
        this.listeners.get(event)?.delete(listener);
        return this;
    }
    emit(event, ...args) {
        for (const l of this.listeners.get(event) ?? []) {
            try {
                l(...args);
            }
            catch (e) {
                queueMicrotask(() => { throw e; });
            }
        }
    }
    /** Connects; resolves on CONNACK, rejects with a {@link RingmqMqttError} when refused or unreachable. */
    connect() {
        if (this.connecting)
            return this.connecting;
        const o = this.options;
        const tls = typeof o.tls === 'object' ? o.tls : {};
        const opts = {
            clientId: this.clientId,
            protocolVersion: o.protocolVersion ?? 5,
            clean: o.clean ?? true,
            keepalive: o.keepalive ?? 30,
            reconnectPeriod: o.reconnectPeriod ?? 1000,
            connectTimeout: o.connectTimeout ?? 10_000,
            resubscribe: false, // done here, on every reconnect without a kept session
            ...(o.username !== undefined ? { username: o.username } : {}),
            ...(o.password !== undefined ? { password: o.password } : {}),
            ...(o.sessionExpiry !== undefined && (o.protocolVersion ?? 5) === 5
                ? { properties: { sessionExpiryInterval: o.sessionExpiry } } : {}),
            ...tls,
            ...(o.mqtt ?? {}),
        };
        if (/^wss?:/.test(this.url) && !o.mqtt?.wsOptions)
            opts.wsOptions = {}; // subprotocol `mqtt` by default
        const client = mqtt.connect(this.url, opts);
        this.client = client;
        let first = true;
        this.connecting = new Promise((resolve, reject) => {
            let lastError;
            const fail = (err) => {
                if (!first)
                    return;
                first = false;
                client.end(true);
                reject(err);
            };
            client.on('connect', (connack) => {
                this.emit('connect', connack);
                if (first) {
                    first = false;
                    resolve();
                    return;
                }
                if (!connack.sessionPresent)
                    void this.resubscribe();
            });
            client.on('error', (err) => {
                lastError = err;
                const code = typeof err.code === 'number' ? err.code : undefined;
                if (code !== undefined) {
                    fail(new RingmqMqttError(`ringmq: connection to ${this.url} refused: ${CONNACK_REASONS[code] ?? err.message} (CONNACK ${code})`, code));
                }
                this.emit('error', err);
            });
            client.on('close', () => {
                this.emit('close');
                fail(new RingmqMqttError(`ringmq: connection to ${this.url} closed before CONNACK` +
                    (lastError ? `: ${lastError.message}` : '')));
            });
            client.on('reconnect', () => this.emit('reconnect'));
            client.on('offline', () => this.emit('offline'));
            client.on('end', () => this.emit('end'));
            client.on('message', (topic, payload, packet) => this.dispatch(topic, payload, packet));
        });
        return this.connecting;
    }
    dispatch(topic, payload, packet) {
        let decoded;
        let done = false;
        for (const [filter, entry] of this.subs) {
            if (!topicMatches(filter, topic))
                continue;
            if (!done) {
                decoded = decodePayload(payload);
                done = true;
            }
            for (const h of entry.handlers) {
                try {
                    h(topic, decoded, packet);
                }
                catch (e) {
                    queueMicrotask(() => { throw e; });
                }
            }
        }
    }
    /** Subscribes again to every filter (called on each reconnect whose CONNACK says the session was not kept). */
    async resubscribe() {
        const client = this.client;
        if (!client || this.subs.size === 0)
            return;
        const map = {};
        for (const [filter, e] of this.subs)
            map[filter] = { qos: e.qos };
        try {
            const granted = await client.subscribeAsync(map);
            this.emit('resubscribe', granted);
        }
        catch (err) {
            this.emit('error', err);
        }
    }
    need() {
        if (!this.client)
            throw new Error('ringmq: call connect() first');
        return this.client;
    }
    /** Subscribes to a filter; `handler` gets each matching message decoded. Rejects when the broker refuses the filter. */
    async subscribe(filter, handler, options = {}) {
        const client = this.need();
        const qos = options.qos ?? 1;
        let entry = this.subs.get(filter);
        const isNew = !entry;
        if (!entry)
            this.subs.set(filter, (entry = { qos, handlers: new Set() }));
        entry.handlers.add(handler);
        let grants;
        try {
            grants = await client.subscribeAsync(filter, { qos });
        }
        catch (err) {
            this.dropHandler(filter, handler, isNew);
            const granted = err.packet?.granted;
            const rc = Array.isArray(granted) ? granted.find((g) => typeof g === 'number' && g >= 0x80) : undefined;
            throw new RingmqMqttError(`ringmq: subscription to ${filter} refused: ${err.message}` +
                (rc !== undefined ? ` (SUBACK 0x${rc.toString(16)})` : ''), rc);
        }
        const g = grants[0]?.qos ?? 0x80;
        if (g >= 0x80) {
            this.dropHandler(filter, handler, isNew);
            throw new RingmqMqttError(`ringmq: subscription to ${filter} refused (SUBACK 0x${g.toString(16)})`, g);
        }
        return {
            filter,
            qos: g,
            unsubscribe: async () => {
                const e = this.subs.get(filter);
                if (!e?.handlers.delete(handler))
                    return;
                if (e.handlers.size === 0) {
                    this.subs.delete(filter);
                    await client.unsubscribeAsync(filter);
                }
            },
        };
    }
    dropHandler(filter, handler, isNew) {
        const e = this.subs.get(filter);
        e?.handlers.delete(handler);
        if (isNew && e && e.handlers.size === 0)
            this.subs.delete(filter);
    }
    /** Unsubscribes from a filter and drops all its handlers. */
    async unsubscribe(filter) {
        const client = this.need();
        this.subs.delete(filter);
        await client.unsubscribeAsync(filter);
    }
    /** Publishes: a string as UTF-8, bytes as they are, any other value as JSON. Resolves when sent (QoS 0) or acknowledged (QoS 1, 2). */
    async publish(topic, payload, options = {}) {
        const client = this.need();
        let body = typeof payload === 'string' ? payload : encodePayload(payload);
        const B = globalThis.Buffer;
        if (body instanceof Uint8Array && B)
            body = B.from(body.buffer, body.byteOffset, body.byteLength);
        let packet;
        try {
            packet = await client.publishAsync(topic, body, { qos: options.qos ?? 0, retain: options.retain ?? false });
        }
        catch (err) {
            const code = err.code;
            throw new RingmqMqttError(`ringmq: publish to ${topic} failed: ${err.message}`, typeof code === 'number' ? code : undefined);
        }
        const rc = packet?.reasonCode;
        if (rc !== undefined && rc >= 0x80)
            throw new RingmqMqttError(`ringmq: publish to ${topic} refused (0x${rc.toString(16)})`, rc);
    }
    /** Disconnects (sending DISCONNECT unless `force`) and stops reconnecting. */
    async end(force = false) {
        const client = this.client;
        if (!client)
            return;
        await client.endAsync(force);
    }
}
