-- wrk script of test_platform_rollout.sh: GET /v1/orders with a bearer
-- token, bounded and paced.
--   WRK_TOKENS    access tokens separated by spaces (used in turn: the
--                 gateway's rate limit on /v1/orders is per JWT subject)
--   WRK_DELAY_MS  pause of each connection between two requests (pacing)
--   WRK_MAX       each thread stops after this many responses
-- done() prints "status codes: 200=N ..." summed over the threads, and
-- latency percentiles.
local tokens = {}
for t in string.gmatch(os.getenv("WRK_TOKENS") or "", "%S+") do
  table.insert(tokens, t)
end
local pace = tonumber(os.getenv("WRK_DELAY_MS") or "0")
local max = tonumber(os.getenv("WRK_MAX") or "10000")
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  codes = {}
  n = 0
  sent = 0
end

function request()
  sent = sent + 1
  local tok = tokens[(sent % #tokens) + 1]
  return wrk.format("GET", "/v1/orders", { ["Authorization"] = "Bearer " .. tok })
end

function delay()
  return pace
end

function response(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
  n = n + 1
  if n >= max then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local all = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("codes")) do
      all[k] = (all[k] or 0) + v
    end
  end
  local parts = {}
  for k, v in pairs(all) do
    table.insert(parts, k .. "=" .. v)
  end
  table.sort(parts)
  io.write("status codes: " .. table.concat(parts, " ") .. "\n")
  io.write(string.format("latency p50=%.1fms p99=%.1fms max=%.1fms\n", latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
