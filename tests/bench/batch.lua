-- wrk: /v1/batch with 100 track events per request, unique messageIds.
local n = 0
local id = math.random(1, 2^30)
request = function()
  local items = {}
  for i = 1, 100 do
    n = n + 1
    items[i] = '{"type":"track","userId":"u' .. (n % 100000) .. '","event":"Page Viewed","properties":{"path":"/pricing","n":'
      .. n .. '},"messageId":"b' .. id .. '-' .. n .. '"}'
  end
  return wrk.format("POST", "/v1/batch", { ["Content-Type"] = "application/json" },
    '{"batch":[' .. table.concat(items, ",") .. ']}')
end
