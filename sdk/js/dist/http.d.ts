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
/** Parses a `Retry-After` header (seconds or an HTTP date) into seconds. */
export declare function retryAfterSeconds(value: string | null): number | undefined;
/** Builds a {@link RingmqError} from a failed response. */
export declare function errorFrom(res: Response): Promise<RingmqError>;
/** The HTTP transport of the SDK: bearer auth, JSON, errors as {@link RingmqError}, retries on 429. */
export declare class Http {
    /** The base URL without a trailing slash. */
    readonly baseUrl: string;
    /** The API key. */
    readonly key: string;
    private readonly opts;
    /** Creates the transport. */
    constructor(opts: HttpOptions);
    /** The fetch in use. */
    get fetch(): typeof fetch;
    /** The full URL of a path and query. */
    urlOf(path: string, query?: RequestOptions['query']): string;
    /** Sends a request; resolves with the answer for 2xx, throws {@link RingmqError} otherwise (after retries for 429). */
    request<T>(method: string, path: string, o?: RequestOptions): Promise<HttpAnswer<T>>;
}
