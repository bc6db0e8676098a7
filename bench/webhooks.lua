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
  first = ((id - 1) % #lines) + 1
  position = first
  stride = tonumber(threads)
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  local line = lines[position]
  position = position + stride
  if position > #lines then
    position = first
  end
  local tab = line:find("\t", 1, true)
  wrk.headers["Stripe-Signature"] = line:sub(1, tab - 1)
  return wrk.format("POST", path, nil, line:sub(tab + 1))
end

-- done(): the RESULT line the benchmark reads (bench/wrk_result.lua, shared by the wrk scripts).
dofile(debug.getinfo(1, "S").source:sub(2):match("(.*/)") .. "wrk_result.lua")
