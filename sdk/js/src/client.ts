import mqtt from 'mqtt';
import type { IClientOptions, IPublishPacket, MqttClient, ISubscriptionGrant } from 'mqtt';
import { decodePayload, encodePayload, type Publishable } from './payload.js';
import { topicMatches } from './topic.js';

/** TLS settings for `mqtts://` (Node): PEM strings or buffers, as Node's `tls.connect` takes them. */
export interface TlsOptions {
  /** Certificate authorities to trust (PEM). */
  ca?: string | Uint8Array | Array<string | Uint8Array>;
  /** A client certificate (PEM). */
  cert?: string | Uint8Array;
  /** The client certificate's key (PEM). */
  key?: string | Uint8Array;
  /** Reject a server certificate that does not verify (default true). */
  rejectUnauthorized?: boolean;
  /** The name to check the server certificate against (SNI). */
  servername?: string;
}

/** Options of {@link RingmqClient}. */
export interface RingmqClientOptions {
  /** Broker host (default `127.0.0.1`); ignored when `url` is given. */
  host?: string;
  /** Port: the MQTT port in Node (default 1883, 8883 with TLS), the HTTP port in browsers (default 8080, 8443 with TLS). */
  port?: number;
  /** MQTT username (`name` or `name@org_id`). */
  username?: string;
  /** MQTT password. */
  password?: string;
  /** Client id (default: a random `ringmq-js-…`). */
  clientId?: string;
  /** `true` or TLS settings: `mqtts://` in Node, `wss://` in browsers. */
  tls?: boolean | TlsOptions;
  /** A full broker URL (`mqtt://`, `mqtts://`, `ws://host:8080/mqtt`, `wss://…`): a `ws(s)` URL selects WebSocket. */
  url?: string;
  /** MQTT protocol version: 5 (default) or 4 (3.1.1). */
  protocolVersion?: 4 | 5;
  /** Start a clean session (default true). With `false`, set `sessionExpiry` (v5) to keep it. */
  clean?: boolean;
  /** Session expiry in seconds (MQTT 5; default 0: the session ends with the connection). */
  sessionExpiry?: number;
  /** Keep-alive in seconds (default 30). */
  keepalive?: number;
  /** Milliseconds between reconnect attempts (default 1000; 0 disables reconnection). */
  reconnectPeriod?: number;
  /** Milliseconds to wait for CONNACK (default 10000). */
  connectTimeout?: number;
  /** Extra MQTT.js options, merged last (advanced). */
  mqtt?: Partial<IClientOptions>;
}

/** Options of {@link RingmqClient.publish}. */
export interface PublishOptions {
  /** QoS 0 (default), 1 or 2. */
  qos?: 0 | 1 | 2;
  /** Retain the message (default false). */
  retain?: boolean;
}

/** Options of {@link RingmqClient.subscribe}. */
export interface SubscribeOptions {
  /** Maximum QoS asked for (default 1). */
  qos?: 0 | 1 | 2;
}

/** Called for each message matching a subscription: `message` is the decoded payload (JSON value, string or bytes). */
export type MessageHandler = (topic: string, message: unknown, packet: IPublishPacket) => void;

/** A subscription made by {@link RingmqClient.subscribe}. */
export interface Subscription {
  /** The filter subscribed to. */
  readonly filter: string;
  /** The QoS the broker granted. */
  readonly qos: number;
  /** Removes this handler and, when it was the filter's last, unsubscribes from the broker. */
  unsubscribe(): Promise<void>;
}

/** Events {@link RingmqClient.on} can listen to. */
export type ClientEvent = 'connect' | 'reconnect' | 'close' | 'offline' | 'error' | 'end' | 'resubscribe';

/** An MQTT refusal: a CONNACK, SUBACK or PUBACK reason code, or a connection that failed before CONNACK. */
export class RingmqMqttError extends Error {
  /** The MQTT reason code (v5) or return code (v3.1.1), when the broker sent one. */
  readonly reasonCode?: number;

  /** Builds the error from a message and an optional reason code. */
  constructor(message: string, reasonCode?: number) {
    super(message);
    this.name = 'RingmqMqttError';
    if (reasonCode !== undefined) this.reasonCode = reasonCode;
  }
}

const g = globalThis as { document?: unknown; WorkerGlobalScope?: unknown };
/** Pages and web workers: WebSocket only. */
const isBrowser = typeof g.document !== 'undefined' || typeof g.WorkerGlobalScope !== 'undefined';

interface Entry {
  qos: 0 | 1 | 2;
  handlers: Set<MessageHandler>;
}

/** The broker URL an options object designates (WebSocket `/mqtt` in browsers). */
export function brokerUrl(o: RingmqClientOptions): string {
  if (o.url) return o.url;
  const host = o.host ?? '127.0.0.1';
  const h = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
  if (isBrowser) return `${o.tls ? 'wss' : 'ws'}://${h}:${o.port ?? (o.tls ? 8443 : 8080)}/mqtt`;
  return `${o.tls ? 'mqtts' : 'mqtt'}://${h}:${o.port ?? (o.tls ? 8883 : 1883)}`;
}

const CONNACK_REASONS: Record<number, string> = {
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
  readonly options: Readonly<RingmqClientOptions>;
  /** The URL connected to. */
  readonly url: string;
  /** The client id used. */
  readonly clientId: string;
  private client?: MqttClient;
  private readonly subs = new Map<string, Entry>();
  private readonly listeners = new Map<ClientEvent, Set<(...args: unknown[]) => void>>();
  private connecting?: Promise<void>;

  /** Prepares a client; nothing is sent before {@link connect}. */
  constructor(options: RingmqClientOptions = {}) {
    this.options = { ...options };
    this.url = brokerUrl(options);
    this.clientId = options.clientId ?? `ringmq-js-${Math.random().toString(16).slice(2, 14)}`;
  }

  /** The underlying MQTT.js client (after {@link connect}). */
  get mqtt(): MqttClient | undefined {
    return this.client;
  }

  /** Whether the client is connected now. */
  get connected(): boolean {
    return this.client?.connected ?? false;
  }

  /** Listens to a client event (`connect`, `reconnect`, `close`, `offline`, `error`, `end`, `resubscribe`). */
  on(event: ClientEvent, listener: (...args: unknown[]) => void): this {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(listener);
    return this;
  }

  /** Stops listening. */
  off(event: ClientEvent, listener: (...args: unknown[]) => void): this {
    this.listeners.get(event)?.delete(listener);
    return this;
  }

  private emit(event: ClientEvent, ...args: unknown[]): void {
    for (const l of this.listeners.get(event) ?? []) {
      try {
        l(...args);
      } catch (e) {
        queueMicrotask(() => { throw e; });
      }
    }
  }

  /** Connects; resolves on CONNACK, rejects with a {@link RingmqMqttError} when refused or unreachable. */
  connect(): Promise<void> {
    if (this.connecting) return this.connecting;
    const o = this.options;
    const tls = typeof o.tls === 'object' ? o.tls : {};
    const opts: IClientOptions = {
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
      ...(tls as object),
      ...(o.mqtt ?? {}),
    };
    if (/^wss?:/.test(this.url) && !o.mqtt?.wsOptions) opts.wsOptions = {}; // subprotocol `mqtt` by default
    const client = mqtt.connect(this.url, opts);
    this.client = client;
    let first = true;
    this.connecting = new Promise<void>((resolve, reject) => {
      let lastError: Error | undefined;
      const fail = (err: Error) => {
        if (!first) return;
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
        if (!connack.sessionPresent) void this.resubscribe();
      });
      client.on('error', (err: Error & { code?: unknown }) => {
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

  private dispatch(topic: string, payload: Uint8Array, packet: IPublishPacket): void {
    let decoded: unknown;
    let done = false;
    for (const [filter, entry] of this.subs) {
      if (!topicMatches(filter, topic)) continue;
      if (!done) {
        decoded = decodePayload(payload);
        done = true;
      }
      for (const h of entry.handlers) {
        try {
          h(topic, decoded, packet);
        } catch (e) {
          queueMicrotask(() => { throw e; });
        }
      }
    }
  }

  /** Subscribes again to every filter (called on each reconnect whose CONNACK says the session was not kept). */
  private async resubscribe(): Promise<void> {
    const client = this.client;
    if (!client || this.subs.size === 0) return;
    const map: Record<string, { qos: 0 | 1 | 2 }> = {};
    for (const [filter, e] of this.subs) map[filter] = { qos: e.qos };
    try {
      const granted = await client.subscribeAsync(map);
      this.emit('resubscribe', granted);
    } catch (err) {
      this.emit('error', err);
    }
  }

  private need(): MqttClient {
    if (!this.client) throw new Error('ringmq: call connect() first');
    return this.client;
  }

  /** Subscribes to a filter; `handler` gets each matching message decoded. Rejects when the broker refuses the filter. */
  async subscribe(filter: string, handler: MessageHandler, options: SubscribeOptions = {}): Promise<Subscription> {
    const client = this.need();
    const qos = options.qos ?? 1;
    let entry = this.subs.get(filter);
    const isNew = !entry;
    if (!entry) this.subs.set(filter, (entry = { qos, handlers: new Set() }));
    entry.handlers.add(handler);
    let grants: ISubscriptionGrant[];
    try {
      grants = await client.subscribeAsync(filter, { qos });
    } catch (err) {
      this.dropHandler(filter, handler, isNew);
      const granted = (err as { packet?: { granted?: number[] } }).packet?.granted;
      const rc = Array.isArray(granted) ? granted.find((g) => typeof g === 'number' && g >= 0x80) : undefined;
      throw new RingmqMqttError(`ringmq: subscription to ${filter} refused: ${(err as Error).message}` +
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
        if (!e?.handlers.delete(handler)) return;
        if (e.handlers.size === 0) {
          this.subs.delete(filter);
          await client.unsubscribeAsync(filter);
        }
      },
    };
  }

  private dropHandler(filter: string, handler: MessageHandler, isNew: boolean): void {
    const e = this.subs.get(filter);
    e?.handlers.delete(handler);
    if (isNew && e && e.handlers.size === 0) this.subs.delete(filter);
  }

  /** Unsubscribes from a filter and drops all its handlers. */
  async unsubscribe(filter: string): Promise<void> {
    const client = this.need();
    this.subs.delete(filter);
    await client.unsubscribeAsync(filter);
  }

  /** Publishes: a string as UTF-8, bytes as they are, any other value as JSON. Resolves when sent (QoS 0) or acknowledged (QoS 1, 2). */
  async publish(topic: string, payload: Publishable, options: PublishOptions = {}): Promise<void> {
    const client = this.need();
    let body: Uint8Array | string = typeof payload === 'string' ? payload : encodePayload(payload);
    const B = (globalThis as { Buffer?: { from(b: ArrayBufferLike, o: number, l: number): Uint8Array } }).Buffer;
    if (body instanceof Uint8Array && B) body = B.from(body.buffer, body.byteOffset, body.byteLength);
    let packet;
    try {
      packet = await client.publishAsync(topic, body as string, { qos: options.qos ?? 0, retain: options.retain ?? false });
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      throw new RingmqMqttError(`ringmq: publish to ${topic} failed: ${(err as Error).message}`, typeof code === 'number' ? code : undefined);
    }
    const rc = (packet as { reasonCode?: number } | undefined)?.reasonCode;
    if (rc !== undefined && rc >= 0x80) throw new RingmqMqttError(`ringmq: publish to ${topic} refused (0x${rc.toString(16)})`, rc);
  }

  /** Disconnects (sending DISCONNECT unless `force`) and stops reconnecting. */
  async end(force = false): Promise<void> {
    const client = this.client;
    if (!client) return;
    await client.endAsync(force);
  }
}
