-- Replays pre-built raw HTTP requests, each at most once: thread k of n sends requests k, k+n, k+2n, ...
-- Written by bench/ingest.py (one file, each request preceded by its length in bytes on a line of its own).
local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  local f = assert(io.open(args[1], "rb"))
  local data = f:read("*a")
  f:close()
  nthreads = tonumber(args[2])
  reqs = {}
  local pos, i = 1, 0
  while pos <= #data do
    local nl = data:find("\n", pos, true)
    local len = tonumber(data:sub(pos, nl - 1))
    if i % nthreads == tid then
      reqs[#reqs + 1] = data:sub(nl + 1, nl + len)
    end
    i = i + 1
    pos = nl + 1 + len
  end
end

function request()
  counter = counter + 1
  if counter > #reqs then
    counter = 1 -- wrapped: repeats answer as duplicates; ingest.py sizes the file so this does not happen
  end
  return reqs[counter]
end

function done(summary, latency, requests)
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "non2xx": %d, "connect": %d, "read": %d, "write": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
end
