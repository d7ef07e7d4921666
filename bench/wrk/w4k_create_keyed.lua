-- W4K: W4's createUser, each request with an Idempotency-Key of its own (the baseline has
-- no such header and runs W4 as it is), to price the key against W4 in the same run.
package.path = package.path .. ";" .. os.getenv("BENCH_WRK_DIR") .. "/?.lua"
local common = require("common")
local counter = 0
local threads = 0
local mutation = '"mutation($i: CreateUserInput!) { createUser(input: $i) { ' ..
  '__typename ... on CreateUserSuccess { user { id name email role } } } }"'

setup = function(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

request = function()
  counter = counter + 1
  local unique = "w4k-" .. os.getenv("BENCH_RUN") .. "-" .. tid .. "-" .. counter
  local email = unique .. "@bench.test"
  if common.kind == "baseline" then
    return wrk.format("POST", "/users", { ["Content-Type"] = "application/json" },
      '{"name":"Bench","email":"' .. email .. '"}')
  end
  return wrk.format("POST", "/graphql", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. common.token,
    ["Idempotency-Key"] = unique,
  }, '{"query":' .. mutation .. ',"variables":{"i":{"name":"Bench","email":"' .. email .. '"}}}')
end
