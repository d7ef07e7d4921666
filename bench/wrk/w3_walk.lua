-- W3: walk all users 100 at a time, following endCursor; start over after the last page.
package.path = package.path .. ";" .. os.getenv("BENCH_WRK_DIR") .. "/?.lua"
local common = require("common")
local query = '"query($after: String) { users(first: 100, after: $after) { ' ..
  'edges { node { id name email role createdAt } } pageInfo { hasNextPage endCursor } } }"'
local after = nil

request = function()
  if common.kind == "baseline" then
    return wrk.format("GET", "/users?first=100" .. (after and ("&after=" .. after) or ""))
  end
  return common.graphql(query, after and ('{"after":"' .. after .. '"}') or '{"after":null}')
end

response = function(status, headers, body)
  local more = body:match('"hasNextPage":(%a+)')
  local cursor = body:match('"endCursor":"([^"]+)"')
  if status ~= 200 or more ~= "true" or not cursor then
    after = nil
  else
    after = cursor
  end
end
