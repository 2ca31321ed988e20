import type { IClientOptions, IPublishPacket, MqttClient } from 'mqtt';
import { type Publishable } from './payload.js';
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
export declare class RingmqMqttError extends Error {
    /** The MQTT reason code (v5) or return code (v3.1.1), when the broker sent one. */
    readonly reasonCode?: number;
    /** Builds the error from a message and an optional reason code. */
    constructor(message: string, reasonCode?: number);
}
/** The broker URL an options object designates (WebSocket `/mqtt` in browsers). */
export declare function brokerUrl(o: RingmqClientOptions): string;
/**
 * An MQTT client of ringmq over MQTT.js: TCP or TLS in Node, WebSocket (`/mqtt`) in browsers or with a
 * `ws://` URL. Create it, then `await client.connect()`. It reconnects on its own and, when the broker
 * did not keep the session, subscribes again to every filter subscribed through it.
 */
export declare class RingmqClient {
    /** The options given. */
    readonly options: Readonly<RingmqClientOptions>;
    /** The URL connected to. */
    readonly url: string;
    /** The client id used. */
    readonly clientId: string;
    private client?;
    private readonly subs;
    private readonly listeners;
    private connecting?;
    /** Prepares a client; nothing is sent before {@link connect}. */
    constructor(options?: RingmqClientOptions);
    /** The underlying MQTT.js client (after {@link connect}). */
    get mqtt(): MqttClient | undefined;
    /** Whether the client is connected now. */
    get connected(): boolean;
    /** Listens to a client event (`connect`, `reconnect`, `close`, `offline`, `error`, `end`, `resubscribe`). */
    on(event: ClientEvent, listener: (...args: unknown[]) => void): this;
    /** Stops listening. */
    off(event: ClientEvent, listener: (...args: unknown[]) => void): this;
    private emit;
    /** Connects; resolves on CONNACK, rejects with a {@link RingmqMqttError} when refused or unreachable. */
    connect(): Promise<void>;
    private dispatch;
    /** Subscribes again to every filter (called on each reconnect whose CONNACK says the session was not kept). */
    private resubscribe;
    private need;
    /** Subscribes to a filter; `handler` gets each matching message decoded. Rejects when the broker refuses the filter. */
    subscribe(filter: string, handler: MessageHandler, options?: SubscribeOptions): Promise<Subscription>;
    private dropHandler;
    /** Unsubscribes from a filter and drops all its handlers. */
    unsubscribe(filter: string): Promise<void>;
    /** Publishes: a string as UTF-8, bytes as they are, any other value as JSON. Resolves when sent (QoS 0) or acknowledged (QoS 1, 2). */
    publish(topic: string, payload: Publishable, options?: PublishOptions): Promise<void>;
    /** Disconnects (sending DISCONNECT unless `force`) and stops reconnecting. */
    end(force?: boolean): Promise<void>;
}
