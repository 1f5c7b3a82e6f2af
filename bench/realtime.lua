-- wrk script for `chatlake bench realtime`: POST /v1/messages with bodies drawn at random
-- from BENCH_BODIES (one JSON body per line), and a JSON summary at the end.
local bodies = {}
local count = 0

function init(args)
  for line in io.lines(os.getenv("BENCH_BODIES")) do
    count = count + 1
    bodies[count] = line
  end
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
  wrk.method = "POST"
  wrk.path = "/v1/messages"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = os.getenv("BENCH_AUTH")
end

function request()
  return wrk.format(nil, nil, nil, bodies[math.random(count)])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "errors": {"connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d}, "latency_us": {"p50": %d, "p90": %d, ' ..
    '"p95": %d, "p99": %d, "max": %d, "mean": %.1f}}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(95),
    latency:percentile(99), latency.max, latency.mean))
end
