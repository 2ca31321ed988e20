import { RingmqError } from './errors.js';

/** Options shared by the HTTP calls of {@link RingmqApi}. */
export interface HttpOptions {
  /** The broker's HTTP base URL, e.g. `http://127.0.0.1:8080`. */
  url: string;
  /** An API key (`sk_…`, `rk_…` or `pk_…`). */
  key: string;
  /** How many times a 429 (or 503 `unavailable`) is retried after its `Retry-After` (default 2). */
  retries?: number;
  /** The longest `Retry-After` waited for, in seconds (default 60); a longer one is thrown at once. */
  maxRetryAfter?: number;
  /** Milliseconds before a request is abandoned (default 30000). */
  timeoutMs?: number;
  /** A `fetch` to use instead of the global one. */
  fetch?: typeof fetch;
}

/** One HTTP request of {@link Http.request}. */
export interface RequestOptions {
  /** Query parameters (undefined values are left out). */
  query?: Record<string, string | number | boolean | undefined | null>;
  /** A JSON body. */
  body?: unknown;
  /** Extra headers. */
  headers?: Record<string, string>;
}

/** The answer of {@link Http.request}: the parsed JSON body (undefined for 204) and the response's headers. */
export interface HttpAnswer<T> {
  /** The HTTP status. */
  status: number;
  /** The parsed body. */
  body: T;
  /** The response headers. */
  headers: Headers;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Parses a `Retry-After` header (seconds or an HTTP date) into seconds. */
export function retryAfterSeconds(value: string | null): number | undefined {
  if (value == null || value === '') return undefined;
  const n = Number(value);
  if (Number.isFinite(n)) return Math.max(0, n);
  const t = Date.parse(value);
  return Number.isNaN(t) ? undefined : Math.max(0, (t - Date.now()) / 1000);
}

/** Builds a {@link RingmqError} from a failed response. */
export async function errorFrom(res: Response): Promise<RingmqError> {
  const text = await res.text().catch(() => '');
  let error = `http_${res.status}`;
  let detail = text.slice(0, 500) || res.statusText;
  try {
    const j = JSON.parse(text) as { error?: unknown; detail?: unknown };
    if (typeof j.error === 'string') error = j.error;
    if (typeof j.detail === 'string') detail = j.detail;
  } catch {
    // not JSON: keep the text
  }
  return new RingmqError(res.status, error, detail, retryAfterSeconds(res.headers.get('retry-after')));
}

/** The HTTP transport of the SDK: bearer auth, JSON, errors as {@link RingmqError}, retries on 429. */
export class Http {
  /** The base URL without a trailing slash. */
  readonly baseUrl: string;
  /** The API key. */
  readonly key: string;
  private readonly opts: HttpOptions;

  /** Creates the transport. */
  constructor(opts: HttpOptions) {
    if (!opts.url) throw new TypeError('ringmq: url is required');
    if (!opts.key) throw new TypeError('ringmq: key is required');
    this.opts = opts;
    this.baseUrl = opts.url.replace(/\/+$/, '');
    this.key = opts.key;
  }

  /** The fetch in use. */
  get fetch(): typeof fetch {
    return this.opts.fetch ?? globalThis.fetch.bind(globalThis);
  }

  /** The full URL of a path and query. */
  urlOf(path: string, query?: RequestOptions['query']): string {
    // Percent-encoding, not form encoding: the API reads `+` as `+` (an MQTT wildcard in stream
    // filters), so a space must travel as %20, never as URLSearchParams' `+`.
    const s = Object.entries(query ?? {})
      .filter(([, v]) => v !== undefined && v !== null)
      .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`)
      .join('&');
    return `${this.baseUrl}${path}${s ? `?${s}` : ''}`;
  }

  /** Sends a request; resolves with the answer for 2xx, throws {@link RingmqError} otherwise (after retries for 429). */
  async request<T>(method: string, path: string, o: RequestOptions = {}): Promise<HttpAnswer<T>> {
    const retries = this.opts.retries ?? 2;
    const url = this.urlOf(path, o.query);
    const headers: Record<string, string> = { Authorization: `Bearer ${this.key}`, Accept: 'application/json', ...o.headers };
    let body: string | undefined;
    if (o.body !== undefined) {
      body = JSON.stringify(o.body);
      headers['Content-Type'] = 'application/json';
    }
    for (let attempt = 0; ; attempt++) {
      let res: Response;
      try {
        res = await this.fetch(url, { method, headers, body, signal: AbortSignal.timeout(this.opts.timeoutMs ?? 30_000) });
      } catch (e) {
        const err = e as Error;
        throw new RingmqError(0, err.name === 'TimeoutError' ? 'timeout' : 'network_error', `${method} ${url}: ${err.message}`);
      }
      if (res.ok) {
        const text = res.status === 204 ? '' : await res.text();
        return { status: res.status, body: (text ? JSON.parse(text) : undefined) as T, headers: res.headers };
      }
      const err = await errorFrom(res);
      const retryable = res.status === 429 && err.error === 'rate_limited' || res.status === 503;
      const wait = err.retryAfter ?? (res.status === 503 ? 1 : undefined);
      if (!retryable || attempt >= retries || wait === undefined || wait > (this.opts.maxRetryAfter ?? 60)) throw err;
      await sleep(wait * 1000);
    }
  }
}
