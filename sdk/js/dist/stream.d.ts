import { type Http } from './http.js';
/** A frame of `/v1/stream` or `/v1/mqtt/stream`, as the broker sends it. */
export interface StreamFrame {
    /** The message's topic. */
    topic: string;
    /** The payload: UTF-8 text, or base64 when `is_base64`. */
    payload: string;
    /** Whether `payload` is base64. */
    is_base64: boolean;
    /** Unix seconds the broker received the message. */
    ts: number;
    /** Unix milliseconds the broker received the message. */
    ts_ms: number;
    /** The retain flag of the publish (retained messages sent first have it too). */
    retained: boolean;
    /** The publish's QoS. */
    qos: number;
    /** The org the message was published in. */
    org_id: string;
}
/** A message of a stream: the frame, its payload's bytes and decoded value, and (SSE) its event id. */
export interface StreamMessage extends StreamFrame {
    /** The payload's bytes. */
    bytes: Uint8Array;
    /** The payload decoded: a JSON value when JSON, else a string when UTF-8, else the bytes. */
    message: unknown;
    /** The SSE event id (`{stream}-{seq}`), usable as `lastEventId` to resume; absent over WebSocket. */
    id?: string;
}
/** Options of {@link RingmqApi.stream}. */
export interface StreamOptions {
    /** The MQTT filter (default `#`). */
    topic?: string;
    /** Only messages of this publisher's client id. */
    device?: string;
    /** Only messages of publishers of this namespace label. */
    ns?: string;
    /** `sse` (default: `GET /v1/stream` over fetch, resumable) or `websocket` (`GET /v1/mqtt/stream`). */
    transport?: 'sse' | 'websocket';
    /** SSE: resume after this event id (sent as `Last-Event-ID`). */
    lastEventId?: string;
    /** SSE: reconnect with `Last-Event-ID` when the connection drops (default true). */
    reconnect?: boolean;
    /** SSE: milliseconds before reconnecting (default: the server's `retry:`, at most 2000). */
    reconnectDelayMs?: number;
    /** Called when the broker reports a gap (`event: gap`: messages since the last id were lost). */
    onGap?: (detail: string) => void;
    /** Called once the stream is open (the subscription is in place). */
    onOpen?: () => void;
    /** Aborts the stream. */
    signal?: AbortSignal;
}
/** A live stream of messages: iterate it with `for await`, stop it with {@link close} (or `break`). */
export declare class RingmqStream implements AsyncIterable<StreamMessage> {
    /** The last SSE event id received (pass it as `lastEventId` to resume later). */
    lastEventId?: string;
    private readonly ctrl;
    private readonly iter;
    /** Use {@link RingmqApi.stream}. */
    constructor(http: Http, opts: StreamOptions);
    /** Stops the stream; a pending `next()` ends the iteration. */
    close(): void;
    /** Whether {@link close} was called. */
    get closed(): boolean;
    /** The stream's messages; iterate once. */
    [Symbol.asyncIterator](): AsyncGenerator<StreamMessage>;
    private query;
    private sse;
    private pause;
    private websocket;
}
