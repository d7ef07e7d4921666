-- W2: the first 100 users, five fields each.
package.path = package.path .. ";" .. os.getenv("BENCH_WRK_DIR") .. "/?.lua"
local common = require("common")
local query = '"{ users(first: 100) { edges { node { id name email role createdAt } } } }"'

request = function()
  if common.kind == "baseline" then
    return wrk.format("GET", "/users?first=100")
  end
  return common.graphql(query)
end
