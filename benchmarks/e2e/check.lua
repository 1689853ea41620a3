-- wrk script for run.py: checks every response (status 200 and, when
-- BENCH_EXPECT is set, that exact body) and prints one machine-readable
-- summary line.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  expected = os.getenv("BENCH_EXPECT")
  checked = 0
  bad = 0
end

function response(status, headers, body)
  checked = checked + 1
  if status ~= 200 or (expected ~= nil and body ~= expected) then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local total_checked, total_bad = 0, 0
  for _, thread in ipairs(threads) do
    total_checked = total_checked + thread:get("checked")
    total_bad = total_bad + thread:get("bad")
  end
  local errors = summary.errors
  io.write(string.format(
    "BENCH-RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d checked=%d bad=%d "
      .. "connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    total_checked, total_bad,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout
  ))
end
