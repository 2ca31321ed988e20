-- wrk script for REST publish: every request is POST /v1/publish with a QoS 0 JSON body.
-- The key comes from the environment (REST_BENCH_KEY) so the script holds no secret; the
-- minimal server ignores it but receives the same bytes, so both sides parse the same request.
local key = os.getenv("REST_BENCH_KEY") or "none"

wrk.method = "POST"
wrk.path = "/v1/publish"
wrk.body = '{"topic":"bench/rest","payload":"hello","qos":0}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key

-- No response() callback: defining one makes wrk hand every response to Lua, which would
-- slow the client down. Statuses >= 400 (401 bad key, 429 rate limit) are counted by wrk
-- itself in summary.errors.status, which done() reports.
function done(summary, latency, requests)
    -- One machine-readable line for scripts/rest-bench.sh (latencies in microseconds).
    io.write(string.format("REST_BENCH rps=%.1f p50_us=%d p99_us=%d requests=%d errors=%d status_errors=%d\n",
        summary.requests / (summary.duration / 1e6),
        latency:percentile(50), latency:percentile(99),
        summary.requests,
        summary.errors.connect + summary.errors.read + summary.errors.write
            + summary.errors.timeout + summary.errors.status,
        summary.errors.status))
end
