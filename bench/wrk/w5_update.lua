-- W5: updateUser, a new name for one of the 10,000 users each time (never a no-op).
package.path = package.path .. ";" .. os.getenv("BENCH_WRK_DIR") .. "/?.lua"
local common = require("common")
local counter = 0
local mutation = '"mutation($id: ID!, $i: UpdateUserInput!) { updateUser(id: $id, input: $i) { ' ..
  '__typename ... on UpdateUserSuccess { user { id name email role } } } }"'

request = function()
  counter = counter + 1
  -- User 1 is the admin whose token drives the run: left as it is.
  local id = math.random(2, 10000)
  local name = "Bench " .. counter
  if common.kind == "baseline" then
    return wrk.format("PATCH", "/users/" .. id, { ["Content-Type"] = "application/json" },
      '{"name":"' .. name .. '"}')
  end
  return common.graphql(mutation, '{"id":"' .. id .. '","i":{"name":"' .. name .. '"}}')
end
