-- W5: updateUser, a new name for one of the 10,000 users each time (never a no-op: each
-- thread's names are its own, and so is its sequence of users).
package.path = package.path .. ";" .. os.getenv("BENCH_WRK_DIR") .. "/?.lua"
local common = require("common")
local counter = 0
local threads = 0
local mutation = '"mutation($id: ID!, $i: UpdateUserInput!) { updateUser(id: $id, input: $i) { ' ..
  '__typename ... on UpdateUserSuccess { user { id name email role } } } }"'

-- Runs in wrk's main state: gives each thread its own id.
setup = function(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

init = function()
  -- Every thread's Lua state starts from the same seed: without this they would all send
  -- the same users and names, and every copy after the first would change nothing.
  math.randomseed(tid * 7919 + (tonumber(os.getenv("BENCH_RUN")) or 0))
end

request = function()
  counter = counter + 1
  -- User 1 is the admin whose token drives the run: left as it is.
  local id = math.random(2, 10000)
  local name = "Bench " .. os.getenv("BENCH_RUN") .. "-" .. tid .. "-" .. counter
  if common.kind == "baseline" then
    return wrk.format("PATCH", "/users/" .. id, { ["Content-Type"] = "application/json" },
      '{"name":"' .. name .. '"}')
  end
  return common.graphql(mutation, '{"id":"' .. id .. '","i":{"name":"' .. name .. '"}}')
end
