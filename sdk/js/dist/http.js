import { RingmqError } from './errors.js';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/** Parses a `Retry-After` header (seconds or an HTTP date) into seconds. */
export function retryAfterSeconds(value) {
    if (value == null || value === '')
        return undefined;
    const n = Number(value);
    if (Number.isFinite(n))
        return Math.max(0, n);
    const t = Date.parse(value);
    return Number.isNaN(t) ? undefined : Math.max(0, (t - Date.now()) / 1000);
}
/** Builds a {@link RingmqError} from a failed response. */
export async function errorFrom(res) {
    const text = await res.text().catch(() => '');
    let error = `http_${res.status}`;
    let detail = text.slice(0, 500) || res.statusText;
    try {
        const j = JSON.parse(text);
        if (typeof j.error === 'string')
            error = j.error;
        if (typeof j.detail === 'string')
            detail = j.detail;
    }
    catch {
        // not JSON: keep the text
    }
    return new RingmqError(res.status, error, detail, retryAfterSeconds(res.headers.get('retry-after')));
}
/** The HTTP transport of the SDK: bearer auth, JSON, errors as {@link RingmqError}, retries on 429. */
export class Http {
    /** The base URL without a trailing slash. */
    baseUrl;
    /** The API key. */
    key;
    opts;
    /** Creates the transport. */
    constructor(opts) {
        if (!opts.url)
            throw new TypeError('ringmq: url is required');
        if (!opts.key)
            throw new TypeError('ringmq: key is required');
        this.opts = opts;
        this.baseUrl = opts.url.replace(/\/+$/, '');
        this.key = opts.key;
    }
    /** The fetch in use. */
    get fetch() {
        return this.opts.fetch ?? globalThis.fetch.bind(globalThis);
    }
    /** The full URL of a path and query. */
    urlOf(path, query) {
        // Percent-encoding, not form encoding: the API reads `+` as `+` (an MQTT wildcard in stream
        // filters), so a space must travel as %20, never as URLSearchParams' `+`.
        const s = Object.entries(query ?? {})
            .filter(([, v]) => v !== undefined && v !== null)
            .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`)
            .join('&');
        return `${this.baseUrl}${path}${s ? `?${s}` : ''}`;
    }
    /** Sends a request; resolves with the answer for 2xx, throws {@link RingmqError} otherwise (after retries for 429). */
    async request(method, path, o = {}) {
        const retries = this.opts.retries ?? 2;
        const url = this.urlOf(path, o.query);
        const headers = { Authorization: `Bearer ${this.key}`, Accept: 'application/json', ...o.headers };
        let body;
        if (o.body !== undefined) {
            body = JSON.stringify(o.body);
            headers['Content-Type'] = 'application/json';
        }
        for (let attempt = 0;; attempt++) {
            let res;
            try {
                res = await this.fetch(url, { method, headers, body, signal: AbortSignal.timeout(this.opts.timeoutMs ?? 30_000) });
            }
            catch (e) {
                const err = e;
                throw new RingmqError(0, err.name === 'TimeoutError' ? 'timeout' : 'network_error', `${method} ${url}: ${err.message}`);
            }
            if (res.ok) {
                const text = res.status === 204 ? '' : await res.text();
                return { status: res.status, body: (text ? JSON.parse(text) : undefined), headers: res.headers };
            }
            const err = await errorFrom(res);
            const retryable = res.status === 429 && err.error === 'rate_limited' || res.status === 503;
            const wait = err.retryAfter ?? (res.status === 503 ? 1 : undefined);
            if (!retryable || attempt >= retries || wait === undefined || wait > (this.opts.maxRetryAfter ?? 60))
                throw err;
            await sleep(wait * 1000);
        }
    }
}
