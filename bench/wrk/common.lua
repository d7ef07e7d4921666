-- Shared by the workload scripts: the request target and headers come from the environment
-- that bench/run.py sets for wrk.
local M = {}
M.kind = os.getenv("BENCH_TARGET")            -- "userql" or "baseline"
M.token = os.getenv("BENCH_TOKEN")

function M.graphql(query, variables)
  local body = '{"query":' .. query
  if variables then body = body .. ',"variables":' .. variables end
  body = body .. '}'
  return wrk.format("POST", "/graphql", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. M.token,
  }, body)
end

return M
