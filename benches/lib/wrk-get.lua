-- wrk script for the proxy bench: small keep-alive GETs of /x.
-- BENCH_TARGET=host:port sends them in absolute form (as to a forward proxy)
-- to whatever address wrk connects to; unset, wrk's own URL is requested.
-- At the end it prints one JSON line with the totals and latencies in µs.
local target = os.getenv("BENCH_TARGET")
if target and target ~= "" then
  wrk.path = "http://" .. target .. "/x"
  wrk.headers["Host"] = target
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\n{"requests":%d,"durationUs":%d,"bytes":%d,"errors":%d,"p50Us":%.1f,"p90Us":%.1f,"p99Us":%.1f,"meanUs":%.1f,"maxUs":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
