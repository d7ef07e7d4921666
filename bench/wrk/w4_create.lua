-- W4: createUser with a fresh email every time.
package.path = package.path .. ";" .. os.getenv("BENCH_WRK_DIR") .. "/?.lua"
local common = require("common")
local counter = 0
local threads = 0
local mutation = '"mutation($i: CreateUserInput!) { createUser(input: $i) { ' ..
  '__typename ... on CreateUserSuccess { user { id name email role } } } }"'

-- Runs in wrk's main state: gives each thread its own id, so emails never collide.
setup = function(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

request = function()
  counter = counter + 1
  local email = "w4-" .. os.getenv("BENCH_RUN") .. "-" .. tid .. "-" .. counter .. "@bench.test"
  if common.kind == "baseline" then
    return wrk.format("POST", "/users", { ["Content-Type"] = "application/json" },
      '{"name":"Bench","email":"' .. email .. '"}')
  end
  return common.graphql(mutation, '{"i":{"name":"Bench","email":"' .. email .. '"}}')
end
