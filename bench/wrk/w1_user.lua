-- W1: one user by id, five fields; ids spread over the 10,000 users.
package.path = package.path .. ";" .. os.getenv("BENCH_WRK_DIR") .. "/?.lua"
local common = require("common")
local query = '"query($id: ID!) { user(id: $id) { id name email role createdAt } }"'

request = function()
  local id = math.random(1, 10000)
  if common.kind == "baseline" then
    return wrk.format("GET", "/user?id=" .. id)
  end
  return common.graphql(query, '{"id":"' .. id .. '"}')
end
