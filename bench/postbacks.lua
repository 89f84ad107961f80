-- wrk script for S2S postbacks on existing clicks: a mix of new conversions, repeats (duplicates)
-- and status changes (updates). Environment: BENCH_CLICK_IDS (a file of click IDs, one a line);
-- BENCH_DELAY_MS (optional: mean pause per connection between requests, to hold the rate down; drawn
-- from an exponential distribution, as bench/clicks.lua's: merchants' servers call independently).
-- Prints one line "BENCH {json}" at the end with latency percentiles and the decisions received.
local threads = {}

function setup(thread)
  thread:set("thread_number", #threads + 1)
  table.insert(threads, thread)
end

local ids = {}
for line in io.lines(os.getenv("BENCH_CLICK_IDS")) do ids[#ids + 1] = line end
local statuses = { "approved", "approved", "approved", "approved", "pending", "rejected" }

accepted, duplicate, updated, other = 0, 0, 0, 0

function init(args)
  math.randomseed(os.time() * 100 + (thread_number or 0))
end

local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "")
if delay_ms then
  function delay() return math.floor(-delay_ms * math.log(1 - math.random()) + 0.5) end
end

function request()
  local query = string.format("/postback?click_id=%s&event=sale&txid=order-%d&payout=12.50&status=%s",
    ids[math.random(#ids)], math.random(1, 2), statuses[math.random(#statuses)])
  return wrk.format("GET", query)
end

function response(status, headers, body)
  if status ~= 200 then other = other + 1
  elseif body:find('"accepted"', 1, true) then accepted = accepted + 1
  elseif body:find('"duplicate"', 1, true) then duplicate = duplicate + 1
  elseif body:find('"updated"', 1, true) then updated = updated + 1
  else other = other + 1 end
end

function done(summary, latency, requests)
  local a, d, u, o = 0, 0, 0, 0
  for _, thread in ipairs(threads) do
    a = a + thread:get("accepted")
    d = d + thread:get("duplicate")
    u = u + thread:get("updated")
    o = o + thread:get("other")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"p999_us":%d,"accepted":%d,' ..
    '"duplicate":%d,"updated":%d,"other":%d,"errors":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), a, d, u, o, e.connect + e.read + e.write + e.timeout))
end
