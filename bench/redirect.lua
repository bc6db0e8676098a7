-- wrk script: GET <BENCH_PREFIX><code><BENCH_SUFFIX> over many codes (one per line in
-- BENCH_CODES), each request a fresh visitor (no cookie is ever sent back), browser user agent.
local codes = {}
local prefix = os.getenv("BENCH_PREFIX")
local suffix = os.getenv("BENCH_SUFFIX") or ""
for line in io.lines(os.getenv("BENCH_CODES")) do
  codes[#codes + 1] = line
end

local thread_count = 0
function setup(thread)
  thread_count = thread_count + 1
  thread:set("id", thread_count)
end

function init(args)
  math.randomseed(os.time() * 1000 + (id or 0))
  wrk.headers["User-Agent"] =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
end

function request()
  local code = codes[math.random(#codes)]
  return wrk.format("GET", prefix .. code .. suffix .. "?utm_source=bench&utm_medium=wrk")
end

function done(summary, latency, requests)
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "status_errors": %d, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), summary.errors.status,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout))
end
