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

-- done(): the RESULT line the benchmark reads (bench/wrk_result.lua, shared by the wrk scripts).
dofile(debug.getinfo(1, "S").source:sub(2):match("(.*/)") .. "wrk_result.lua")
