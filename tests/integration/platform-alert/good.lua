-- wrk script of test_platform_alert.sh: good traffic to order-svc (GET
-- /v1/orders with a bearer token) that dilutes its error ratio, bounded.
--   WRK_TOKENS  access tokens separated by spaces, used in turn (the
--               gateway's rate limit on /v1/orders is per JWT subject)
--   WRK_MAX     each thread stops after this many responses
-- done() prints "status codes: 200=N ..." summed over the threads.
local tokens = {}
for t in string.gmatch(os.getenv("WRK_TOKENS") or "", "%S+") do
  table.insert(tokens, t)
end
local max = tonumber(os.getenv("WRK_MAX") or "1000")
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
end
