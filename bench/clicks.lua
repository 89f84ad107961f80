-- wrk script for tracking-link clicks: every request varies its sub IDs, external ID and user agent.
-- Environment: BENCH_PATH (e.g. /c/abc123); BENCH_DELAY_MS (optional: mean pause per connection between
-- requests, to hold the rate below the maximum; BENCH_PAUSE=fixed makes every pause that long);
-- BENCH_CLICKS_UNTIL (optional, Unix seconds: from then
-- on ask for /health instead, so no click is in flight when wrk stops and the clicks stored must equal
-- the 302s received, exactly). Prints one line "BENCH {json}" at the end with the latency percentiles
-- and the counts: requests written, 302s received, /health answers, other answers.
local threads = {}

function setup(thread)
  thread:set("thread_number", #threads + 1)
  table.insert(threads, thread)
end

local path = os.getenv("BENCH_PATH") or "/"
local agents = {
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
  "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
  "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
  "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
}

local clicks_until = tonumber(os.getenv("BENCH_CLICKS_UNTIL") or "")
sent, got302, health, other = 0, 0, 0, 0

function init(args)
  math.randomseed(os.time() * 100 + (thread_number or 0))
end

function request()
  if clicks_until and os.time() >= clicks_until then
    return wrk.format("GET", "/health")
  end
  sent = sent + 1
  local query = string.format(
    "%s?sub1=placement-%d&sub2=creative-%d&sub3=kw%%20%d&external_id=net-%d-%d&cost=0.0%d",
    path, math.random(1, 200), math.random(1, 30), math.random(1, 5000), thread_number or 0, sent,
    math.random(1, 9))
  return wrk.format("GET", query, { ["User-Agent"] = agents[math.random(#agents)] })
end

function response(status, headers, body)
  if status == 302 then got302 = got302 + 1
  elseif status == 200 and clicks_until then health = health + 1
  else other = other + 1 end
end

local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "")
if delay_ms then
  if os.getenv("BENCH_PAUSE") == "fixed" then
    function delay() return delay_ms end
  else
    -- Pauses drawn from an exponential distribution with that mean, so clicks arrive as independent
    -- visitors do (a Poisson process), not in lockstep: with one fixed pause every connection answered
    -- by the same group commit comes back at the same moment, and the server sees waves of 128 clicks
    -- whose last one waits for all the others (BENCHMARKS.md, "Latency at 70%").
    function delay() return math.floor(-delay_ms * math.log(1 - math.random()) + 0.5) end
  end
end

function done(summary, latency, requests)
  local s, g, h, o = 0, 0, 0, 0
  for _, thread in ipairs(threads) do
    s = s + thread:get("sent")
    g = g + thread:get("got302")
    h = h + thread:get("health")
    o = o + thread:get("other")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"p999_us":%d,"sent":%d,"status_302":%d,' ..
    '"health":%d,"other":%d,"errors":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), s, g, h, o, e.connect + e.read + e.write + e.timeout))
end
