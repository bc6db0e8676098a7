-- wrk script: POST pre-signed Stripe webhooks to BENCH_PATH, each once. BENCH_WEBHOOKS holds one per line,
-- "<Stripe-Signature header>\t<JSON body>"; thread i of n sends lines i, i+n, i+2n, ... (no duplicates),
-- and starts over only when it has sent all of its lines (then the door answers duplicates).
local lines = {}
for line in io.lines(os.getenv("BENCH_WEBHOOKS")) do
  lines[#lines + 1] = line
end
local path = os.getenv("BENCH_PATH")

local thread_count = 0
function setup(thread)
  thread_count = thread_count + 1
  thread:set("id", thread_count)
  thread:set("threads", os.getenv("BENCH_THREADS") or "2")
end

function init(args)
  position = id
  stride = tonumber(threads)
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  local line = lines[position]
  position = position + stride
  if position > #lines then
    position = id
  end
  local tab = line:find("\t", 1, true)
  wrk.headers["Stripe-Signature"] = line:sub(1, tab - 1)
  return wrk.format("POST", path, nil, line:sub(tab + 1))
end

function done(summary, latency, requests)
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "status_errors": %d, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), summary.errors.status,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout))
end
