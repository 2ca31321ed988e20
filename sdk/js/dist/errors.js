/** An error answered by the broker's HTTP API (`{"error", "detail"}`), or a transport failure (status 0). */
export class RingmqError extends Error {
    /** The HTTP status (0 when no answer was received). */
    status;
    /** The broker's error code, e.g. `not_found`, `bad_request`, `unauthorized`, `rate_limited`. */
    error;
    /** The broker's human-readable sentence. */
    detail;
    /** `Retry-After` in seconds when the broker sent one (429, 503). */
    retryAfter;
    /** Builds an error from an HTTP status and the broker's `{"error", "detail"}` fields. */
    constructor(status, error, detail, retryAfter) {
        super(status ? `ringmq: ${status} ${error}: ${detail}` : `ringmq: ${error}: ${detail}`);
        this.name = 'RingmqError';
        this.status = status;
        this.error = error;
        this.detail = detail;
        if (retryAfter !== undefined)
            this.retryAfter = retryAfter;
    }
}
