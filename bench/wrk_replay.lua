-- Sends each pre-built request exactly once (thread k of n sends requests k, k+n, k+2n, ...) and stops a thread
-- once every one of its requests is answered (or when wrk's -d duration ends). Written by bench/ingest.py and
-- bench/first_sync.py: one file, each request preceded by its length in bytes on a line of its own. While a thread
-- waits for its last answers, its idle connections send GET /healthz (answered 200, so not counted: the webhooks
-- answer 202 or an error).
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  local f = assert(io.open(args[1], "rb"))
  local data = f:read("*a")
  f:close()
  local nthreads = tonumber(args[2])
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
  sent, accepted, refused = 0, 0, 0
  filler = wrk.format("GET", "/healthz")
  -- wrk calls request() once on thread 0 to check the script before sending anything: that call gets the filler.
  checked = tid ~= 0
end

function request()
  if not checked then
    checked = true
    return filler
  end
  if sent < #reqs then
    sent = sent + 1
    return reqs[sent]
  end
  return filler
end

function response(status, headers, body)
  if status == 200 then
    return
  end
  if status == 202 then
    accepted = accepted + 1
  else
    refused = refused + 1
  end
  if accepted + refused >= #reqs then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local accepted_all, refused_all = 0, 0
  for _, thread in ipairs(threads) do
    accepted_all = accepted_all + thread:get("accepted")
    refused_all = refused_all + thread:get("refused")
  end
  io.write(string.format(
    'WRK_JSON {"accepted": %d, "refused": %d, "socket_errors": %d, "requests": %d, "duration_us": %d, '
      .. '"non2xx": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    accepted_all, refused_all,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.requests, summary.duration, summary.errors.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
