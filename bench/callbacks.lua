-- wrk script: POST callback documents whose ids were never used before, so
-- that every request stores new states (nothing is skipped as a duplicate).
--
--   wrk -t2 -c32 -d10s -s bench/callbacks.lua URL -- STATES ID_BASE
--
-- STATES: <state> elements per document; ID_BASE: the first id (each run
-- takes its own range). Thread t numbers its ids from ID_BASE + t * 10^12.
-- At the end one line "JSON {...}" gives the counts and latency figures.

local states, base, counter = 1, 0, 0
local threads = {}

function setup(thread)
   thread:set("thread_index", #threads)
   table.insert(threads, thread)
end

function init(args)
   states = tonumber(args[1]) or 1
   base = tonumber(args[2]) or 0
end

function request()
   local first = base + thread_index * 1e12 + counter * states
   counter = counter + 1
   local parts = { '<?xml version="1.0" encoding="utf-8"?><request>' }
   for k = 0, states - 1 do
      parts[#parts + 1] = string.format(
         '<state id_sms="%d" time="2024-05-01 10:00:00">deliver</state>', first + k)
   end
   parts[#parts + 1] = "</request>"
   return wrk.format("POST", nil, nil, table.concat(parts))
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'JSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect_errors": %d, ' ..
      '"read_errors": %d, "write_errors": %d, "non_2xx": %d, "timeouts": %d, ' ..
      '"p50_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f}\n',
      summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
      e.status, e.timeout, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
      latency.max / 1000))
end
