-- wrk script: POST /v1/chat/completions with a small chat body.
-- BENCH_MODE=plain  no X-Conversation-Id (direct mock, bare pass-through)
-- BENCH_MODE=new    a new conversation per request: X-Conversation-Id = BENCH_TAG-<thread>-<counter>
-- BENCH_MODE=pool   round-robin over BENCH_POOL existing conversations BENCH_PREFIX-<BENCH_OFFSET + 0 .. N-1>
-- BENCH_MAX_HISTORY sets X-Max-History-Messages; BENCH_STREAM=1 asks for a stream.
-- BENCH_API=responses posts {"model", "input"} to /v1/responses instead (a new stored response each).
-- done() prints one line "BENCH {json}" that benchmarks/run.py reads.

local mode = os.getenv("BENCH_MODE") or "plain"
local tag = os.getenv("BENCH_TAG") or "bench"
local prefix = os.getenv("BENCH_PREFIX") or "bench"
local pool = tonumber(os.getenv("BENCH_POOL") or "1")
local offset = tonumber(os.getenv("BENCH_OFFSET") or "0")
local max_history = os.getenv("BENCH_MAX_HISTORY") or ""
local stream = os.getenv("BENCH_STREAM") == "1"
local api = os.getenv("BENCH_API") or "chat"
local path = "/v1/chat/completions"

local body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello! What is the weather like in Rome today?"}]'
if api == "responses" then
  path = "/v1/responses"
  body = '{"model":"gpt-4o-mini","input":"Hello! What is the weather like in Rome today?"'
  mode = "plain"  -- each response makes its own conversation
end
if stream then body = body .. ',"stream":true' end
body = body .. '}'

local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer sk-bench"}
if max_history ~= "" then headers["X-Max-History-Messages"] = max_history end

local threads = 0
local counter = 0
local fixed = nil

function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

function init(args)
  if mode == "plain" then
    fixed = wrk.format("POST", path, headers, body)
  end
end

function request()
  if fixed then return fixed end
  counter = counter + 1
  if mode == "new" then
    headers["X-Conversation-Id"] = tag .. "-" .. tostring(tid) .. "-" .. counter
  else
    headers["X-Conversation-Id"] = prefix .. "-" .. (offset + counter % pool)
  end
  return wrk.format("POST", path, headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"status_errors":%d,"socket_errors":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
