-- wrk script: requests the paths listed in a file, one per line, in order,
-- starting at line START (1-based), wrapping around at the end. Use with one
-- wrk thread (-t1) so that every request of a run gets the next line: for a
-- list of distinct variants, every request is a variant never made before.
--
--   wrk -t1 -c8 -d15s -s bench/lib/paths.lua http://127.0.0.1:PORT -- PATHS_FILE START
--
-- At the end it prints one JSON line (prefixed "RESULT ") with the request
-- count, duration, errors and latency percentiles in microseconds.

local paths = {}
local index = 1

function init(args)
  for line in io.lines(args[1]) do
    paths[#paths + 1] = line
  end
  index = tonumber(args[2] or "1")
end

function request()
  local path = paths[((index - 1) % #paths) + 1]
  index = index + 1
  return wrk.format("GET", path)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"status_errors":%d,"connect_errors":%d,' ..
    '"read_errors":%d,"write_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
