import { RingmqError } from './errors.js';
import { errorFrom, type Http } from './http.js';
import { decodePayload, fromBase64 } from './payload.js';

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

function toMessage(frame: StreamFrame, id?: string): StreamMessage {
  const bytes = frame.is_base64 ? fromBase64(frame.payload) : new TextEncoder().encode(frame.payload);
  const msg: StreamMessage = { ...frame, bytes, message: decodePayload(bytes) };
  if (id !== undefined) msg.id = id;
  return msg;
}

/** A live stream of messages: iterate it with `for await`, stop it with {@link close} (or `break`). */
export class RingmqStream implements AsyncIterable<StreamMessage> {
  /** The last SSE event id received (pass it as `lastEventId` to resume later). */
  lastEventId?: string;
  private readonly ctrl = new AbortController();
  private readonly iter: AsyncGenerator<StreamMessage>;

  /** Use {@link RingmqApi.stream}. */
  constructor(http: Http, opts: StreamOptions) {
    if (opts.lastEventId) this.lastEventId = opts.lastEventId;
    opts.signal?.addEventListener('abort', () => this.close(), { once: true });
    this.iter = opts.transport === 'websocket' ? this.websocket(http, opts) : this.sse(http, opts);
  }

  /** Stops the stream; a pending `next()` ends the iteration. */
  close(): void {
    this.ctrl.abort();
  }

  /** Whether {@link close} was called. */
  get closed(): boolean {
    return this.ctrl.signal.aborted;
  }

  /** The stream's messages; iterate once. */
  [Symbol.asyncIterator](): AsyncGenerator<StreamMessage> {
    return this.iter;
  }

  private query(opts: StreamOptions): Record<string, string | undefined> {
    return { topic: opts.topic ?? '#', device: opts.device, ns: opts.ns };
  }

  private async *sse(http: Http, opts: StreamOptions): AsyncGenerator<StreamMessage> {
    const url = http.urlOf('/v1/stream', this.query(opts));
    let retryMs = 2000;
    let opened = false;
    try {
      for (;;) {
        const headers: Record<string, string> = { Authorization: `Bearer ${http.key}`, Accept: 'text/event-stream' };
        if (this.lastEventId) headers['Last-Event-ID'] = this.lastEventId;
        let res: Response;
        try {
          res = await http.fetch(url, { headers, signal: this.ctrl.signal });
        } catch (e) {
          if (this.closed) return;
          if (!opened || opts.reconnect === false) throw new RingmqError(0, 'network_error', `GET ${url}: ${(e as Error).message}`);
          await this.pause(opts.reconnectDelayMs ?? Math.min(retryMs, 2000));
          continue;
        }
        if (!res.ok || !res.body) {
          const err = await errorFrom(res);
          if (res.status === 429 && err.error === 'rate_limited' && err.retryAfter !== undefined && err.retryAfter <= 60) {
            await this.pause(err.retryAfter * 1000);
            continue;
          }
          throw err;
        }
        opened = true;
        opts.onOpen?.();
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        let data: string[] = [];
        let event = '';
        let id: string | undefined;
        try {
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buf += value;
            let nl: number;
            while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
              const line = buf.slice(0, nl);
              buf = buf.slice(nl + (buf[nl] === '\r' && buf[nl + 1] === '\n' ? 2 : 1));
              if (line === '') {
                // dispatch
                if (id !== undefined) this.lastEventId = id;
                const text = data.join('\n');
                const ev = event || 'message';
                data = [];
                event = '';
                id = undefined;
                if (text === '' && ev === 'message') continue;
                if (ev === 'message') {
                  yield toMessage(JSON.parse(text) as StreamFrame, this.lastEventId);
                } else if (ev === 'gap') {
                  let detail = text;
                  try { detail = (JSON.parse(text) as { detail?: string }).detail ?? text; } catch { /* raw */ }
                  opts.onGap?.(detail);
                } else if (ev === 'revoked') {
                  let body: { error?: string; detail?: string } = {};
                  try { body = JSON.parse(text); } catch { /* raw */ }
                  throw new RingmqError(body.error === 'unauthorized' ? 401 : 403, body.error ?? 'forbidden',
                    body.detail ?? 'the stream was revoked');
                }
                continue;
              }
              if (line.startsWith(':')) continue;
              const colon = line.indexOf(':');
              const field = colon < 0 ? line : line.slice(0, colon);
              let val = colon < 0 ? '' : line.slice(colon + 1);
              if (val.startsWith(' ')) val = val.slice(1);
              if (field === 'data') data.push(val);
              else if (field === 'event') event = val;
              else if (field === 'id') id = val;
              else if (field === 'retry' && /^\d+$/.test(val)) retryMs = Number(val);
            }
          }
        } catch (e) {
          if (this.closed) return;
          if (e instanceof RingmqError || e instanceof SyntaxError) throw e;
          if (opts.reconnect === false) throw new RingmqError(0, 'network_error', `stream ${url}: ${(e as Error).message}`);
        } finally {
          reader.cancel().catch(() => {});
        }
        if (this.closed || opts.reconnect === false) return;
        await this.pause(opts.reconnectDelayMs ?? Math.min(retryMs, 2000));
      }
    } catch (e) {
      if (e instanceof StreamClosed || this.closed) return;
      throw e;
    } finally {
      this.ctrl.abort();
    }
  }

  private pause(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const t = setTimeout(resolve, ms);
      this.ctrl.signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
    }).then(() => {
      if (this.closed) throw new StreamClosed();
    });
  }

  private async *websocket(http: Http, opts: StreamOptions): AsyncGenerator<StreamMessage> {
    const q = this.query(opts);
    const base = http.baseUrl.replace(/^http/, 'ws');
    const Native = (globalThis as { WebSocket?: typeof WebSocket }).WebSocket;
    const isBrowser = typeof (globalThis as { document?: unknown }).document !== 'undefined';
    const queue: StreamMessage[] = [];
    let failure: Error | undefined;
    let ended = false;
    let wake: (() => void) | undefined;
    const notify = () => { const w = wake; wake = undefined; w?.(); };
    let close: () => void;
    let opened = false;
    const onClose = (code: number, reason: string) => {
      ended = true;
      if (!failure && code === 1008) failure = new RingmqError(403, 'forbidden', reason || 'the stream was closed: the key may no longer read it');
      else if (!failure && !opened) failure = new RingmqError(0, 'stream_refused', `WebSocket ${base}/v1/mqtt/stream closed before opening (code ${code})`);
      else if (!failure && code !== 1000 && code !== 1001 && code !== 1005) failure = new RingmqError(0, 'stream_closed', `WebSocket closed with code ${code} ${reason}`);
      notify();
    };
    const onFrame = (text: string) => {
      try {
        queue.push(toMessage(JSON.parse(text) as StreamFrame));
      } catch (e) {
        failure = e as Error;
      }
      notify();
    };
    const onOpen = () => { opened = true; opts.onOpen?.(); };
    if (Native && (isBrowser || !('process' in globalThis))) {
      // Browsers cannot set headers on a WebSocket: the key goes in ?token=.
      const ws = new Native(http.urlOf('/v1/mqtt/stream', { ...q, token: http.key }).replace(/^http/, 'ws'));
      ws.onopen = onOpen;
      ws.onmessage = (e) => onFrame(String(e.data));
      ws.onclose = (e) => onClose(e.code, e.reason);
      close = () => ws.close(1000);
    } else {
      // Node 20 has no global WebSocket: the `ws` package (MQTT.js's own), which can send the key as a header.
      const { default: WS } = await import('ws');
      const ws = new WS(http.urlOf('/v1/mqtt/stream', q).replace(/^http/, 'ws'), { headers: { Authorization: `Bearer ${http.key}` } });
      ws.on('open', onOpen);
      ws.on('message', (data: Buffer) => onFrame(data.toString('utf8')));
      ws.on('unexpected-response', (_req, res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => { body += c; });
        res.on('end', () => {
          let error = `http_${res.statusCode}`;
          let detail = body;
          try { const j = JSON.parse(body); error = j.error ?? error; detail = j.detail ?? detail; } catch { /* raw */ }
          failure = new RingmqError(res.statusCode ?? 0, error, detail, Number(res.headers['retry-after']) || undefined);
          ended = true;
          notify();
        });
      });
      ws.on('error', (e: Error) => { if (!failure) failure = new RingmqError(0, 'network_error', e.message); });
      ws.on('close', (code: number, reason: Buffer) => onClose(code, reason.toString('utf8')));
      close = () => { if (ws.readyState === WS.CONNECTING) ws.terminate(); else ws.close(1000); };
    }
    const abort = () => { ended = true; close(); notify(); };
    this.ctrl.signal.addEventListener('abort', abort, { once: true });
    try {
      for (;;) {
        if (queue.length) { yield queue.shift()!; continue; }
        if (this.closed) return;
        if (failure) throw failure;
        if (ended) return;
        await new Promise<void>((r) => { wake = r; });
      }
    } finally {
      this.ctrl.signal.removeEventListener('abort', abort);
      close();
      this.ctrl.abort();
    }
  }
}

/** Internal: thrown by a pause interrupted by close(). */
class StreamClosed extends Error {}
