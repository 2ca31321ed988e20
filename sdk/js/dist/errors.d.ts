/** An error answered by the broker's HTTP API (`{"error", "detail"}`), or a transport failure (status 0). */
export declare class RingmqError extends Error {
    /** The HTTP status (0 when no answer was received). */
    readonly status: number;
    /** The broker's error code, e.g. `not_found`, `bad_request`, `unauthorized`, `rate_limited`. */
    readonly error: string;
    /** The broker's human-readable sentence. */
    readonly detail: string;
    /** `Retry-After` in seconds when the broker sent one (429, 503). */
    readonly retryAfter?: number;
    /** Builds an error from an HTTP status and the broker's `{"error", "detail"}` fields. */
    constructor(status: number, error: string, detail: string, retryAfter?: number);
}
