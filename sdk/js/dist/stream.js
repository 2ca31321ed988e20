import { RingmqError } from './errors.js';
import { errorFrom } from './http.js';
import { decodePayload, fromBase64 } from './payload.js';
function toMessage(frame, id) {
    const bytes = frame.is_base64 ? fromBase64(frame.payload) : new TextEncoder().encode(frame.payload);
    const msg = { ...frame, bytes, message: decodePayload(bytes) };
    if (id !== undefined)
        msg.id = id;
    return msg;
}
/** A live stream of messages: iterate it with `for await`, stop it with {@link close} (or `break`). */
export class RingmqStream {
    /** The last SSE event id received (pass it as `lastEventId` to resume later). */
    lastEventId;
    ctrl = new AbortController();
    iter;
    /** Use {@link RingmqApi.stream}. */
    constructor(http, opts) {
        if (opts.lastEventId)
            this.lastEventId = opts.lastEventId;
        opts.signal?.addEventListener('abort', () => this.close(), { once: true });
        this.iter = opts.transport === 'websocket' ? this.websocket(http, opts) : this.sse(http, opts);
    }
    /** Stops the stream; a pending `next()` ends the iteration. */
    close() {
        this.ctrl.abort();
    }
    /** Whether {@link close} was called. */
    get closed() {
        return this.ctrl.signal.aborted;
    }
    /** The stream's messages; iterate once. */
    [Symbol.asyncIterator]() {
        return this.iter;
    }
    query(opts) {
        return { topic: opts.topic ?? '#', device: opts.device, ns: opts.ns };
    }
    async *sse(http, opts) {
        const url = http.urlOf('/v1/stream', this.query(opts));
        let retryMs = 2000;
        let opened = false;
        try {
            for (;;) {
                const headers = { Authorization: `Bearer ${http.key}`, Accept: 'text/event-stream' };
                if (this.lastEventId)
                    headers['Last-Event-ID'] = this.lastEventId;
                let res;
                try {
                    res = await http.fetch(url, { headers, signal: this.ctrl.signal });
                }
                catch (e) {
                    if (this.closed)
                        return;
                    if (!opened || opts.reconnect === false)
                        throw new RingmqError(0, 'network_error', `GET ${url}: ${e.message}`);
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
                let data = [];
                let event = '';
                let id;
                try {
                    for (;;) {
                        const { value, done } = await reader.read();
                        if (done)
                            break;
                        buf += value;
                        let nl;
                        while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
                            const line = buf.slice(0, nl);
                            buf = buf.slice(nl + (buf[nl] === '\r' && buf[nl + 1] === '\n' ? 2 : 1));
                            if (line === '') {
                                // dispatch
                                if (id !== undefined)
                                    this.lastEventId = id;
                                const text = data.join('\n');
                                const ev = event || 'message';
                                data = [];
                                event = '';
                                id = undefined;
                                if (text === '' && ev === 'message')
                                    continue;
                                if (ev === 'message') {
                                    yield toMessage(JSON.parse(text), this.lastEventId);
                                }
                                else if (ev === 'gap') {
                                    let detail = text;
                                    try {
                                        detail = JSON.parse(text).detail ?? text;
                                    }
                                    catch { /* raw */ }
                                    opts.onGap?.(detail);
                                }
                                else if (ev === 'revoked') {
                                    let body = {};
                                    try {
                                        body = JSON.parse(text);
                                    }
                                    catch { /* raw */ }
                                    throw new RingmqError(body.error === 'unauthorized' ? 401 : 403, body.error ?? 'forbidden', body.detail ?? 'the stream was revoked');
                                }
                                continue;
                            }
                            if (line.startsWith(':'))
                                continue;
                            const colon = line.indexOf(':');
                            const field = colon < 0 ? line : line.slice(0, colon);
                            let val = colon < 0 ? '' : line.slice(colon + 1);
                            if (val.startsWith(' '))
                                val = val.slice(1);
                            if (field === 'data')
                                data.push(val);
                            else if (field === 'event')
                                event = val;
                            else if (field === 'id')
                                id = val;
                            else if (field === 'retry' && /^\d+$/.test(val))
                                retryMs = Number(val);
                        }
                    }
                }
                catch (e) {
                    if (this.closed)
                        return;
                    if (e instanceof RingmqError || e instanceof SyntaxError)
                        throw e;
                    if (opts.reconnect === false)
                        throw new RingmqError(0, 'network_error', `stream ${url}: ${e.message}`);
                }
                finally {
                    reader.cancel().catch(() => { });
                }
                if (this.closed || opts.reconnect === false)
                    return;
                await this.pause(opts.reconnectDelayMs ?? Math.min(retryMs, 2000));
            }
        }
        catch (e) {
            if (e instanceof StreamClosed || this.closed)
                return;
            throw e;
        }
        finally {
            this.ctrl.abort();
        }
    }
    pause(ms) {
        return new Promise((resolve) => {
            const t = setTimeout(resolve, ms);
            this.ctrl.signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
        }).then(() => {
            if (this.closed)
                throw new StreamClosed();
        });
    }
    async *websocket(http, opts) {
        const q = this.query(opts);
        const base = http.baseUrl.replace(/^http/, 'ws');
        const Native = globalThis.WebSocket;
        const isBrowser = typeof globalThis.document !== 'undefined';
        const queue = [];
        let failure;
        let ended = false;
        let wake;
        const notify = () => { const w = wake; wake = undefined; w?.(); };
        let close;
        let opened = false;
        const onClose = (code, reason) => {
            ended = true;
            if (!failure && code === 1008)
                failure = new RingmqError(403, 'forbidden', reason || 'the stream was closed: the key may no longer read it');
            else if (!failure && !opened)
                failure = new RingmqError(0, 'stream_refused', `WebSocket ${base}/v1/mqtt/stream closed before opening (code ${code})`);
            else if (!failure && code !== 1000 && code !== 1001 && code !== 1005)
                failure = new RingmqError(0, 'stream_closed', `WebSocket closed with code ${code} ${reason}`);
            notify();
        };
        const onFrame = (text) => {
            try {
                queue.push(toMessage(JSON.parse(text)));
            }
            catch (e) {
                failure = e;
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
        }
        else {
            // Node 20 has no global WebSocket: the `ws` package (MQTT.js's own), which can send the key as a header.
            const { default: WS } = await import('ws');
            const ws = new WS(http.urlOf('/v1/mqtt/stream', q).replace(/^http/, 'ws'), { headers: { Authorization: `Bearer ${http.key}` } });
            ws.on('open', onOpen);
            ws.on('message', (data) => onFrame(data.toString('utf8')));
            ws.on('unexpected-response', (_req, res) => {
                let body = '';
                res.setEncoding('utf8');
                res.on('data', (c) => { body += c; });
                res.on('end', () => {
                    let error = `http_${res.statusCode}`;
                    let detail = body;
                    try {
                        const j = JSON.parse(body);
                        error = j.error ?? error;
                        detail = j.detail ?? detail;
                    }
                    catch { /* raw */ }
                    failure = new RingmqError(res.statusCode ?? 0, error, detail, Number(res.headers['retry-after']) || undefined);
                    ended = true;
                    notify();
                });
            });
            ws.on('error', (e) => { if (!failure)
                failure = new RingmqError(0, 'network_error', e.message); });
            ws.on('close', (code, reason) => onClose(code, reason.toString('utf8')));
            close = () => { if (ws.readyState === WS.CONNECTING)
                ws.terminate();
            else
                ws.close(1000); };
        }
        const abort = () => { ended = true; close(); notify(); };
        this.ctrl.signal.addEventListener('abort', abort, { once: true });
        try {
            for (;;) {
                if (queue.length) {
                    yield queue.shift();
                    continue;
                }
                if (this.closed)
                    return;
                if (failure)
                    throw failure;
                if (ended)
                    return;
                await new Promise((r) => { wake = r; });
            }
        }
        finally {
            this.ctrl.signal.removeEventListener('abort', abort);
            close();
            this.ctrl.abort();
        }
    }
}
/** Internal: thrown by a pause interrupted by close(). */
class StreamClosed extends Error {
}
