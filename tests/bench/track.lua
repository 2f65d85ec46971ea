-- wrk: one Segment track event per request (keep-alive), unique messageIds.
local n = 0
local id = math.random(1, 2^30)
request = function()
  n = n + 1
  local body = '{"userId":"u' .. (n % 100000) .. '","event":"Page Viewed","properties":{"path":"/pricing","n":'
    .. n .. '},"messageId":"w' .. id .. '-' .. n .. '"}'
  return wrk.format("POST", "/v1/track", { ["Content-Type"] = "application/json" }, body)
end
