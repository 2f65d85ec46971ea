-- journey.channels.webhook: a JSON POST of the whole action, signed per Standard Webhooks.
--
--   j.channel "crm" { type = "webhook", url = j.env "CRM_URL",
--                     secret = j.env "CRM_SECRET" }          -- "whsec_<base64>", or secrets = { new, old }
--
-- Body: the action as JSON { time, user, journey, stage, channel, payload, id } (or only
-- the payload with `body = "payload"`). Headers: content-type, user-agent, any
-- spec.headers { name = value }. The dispatcher adds webhook-id (the action id),
-- webhook-timestamp and webhook-signature (one "v1,<base64>" per secret) at send time:
-- secrets never pass through Lua's request table.
local M = {}

function M.format(spec, action)
  if type(spec.url) ~= "string" or spec.url == "" then
    error(("channel %s: webhook needs url"):format(spec.name), 0)
  end
  local headers = {
    { "content-type", "application/json" },
    { "user-agent", "journeyd" },
  }
  for k, v in pairs(spec.headers or {}) do headers[#headers + 1] = { tostring(k), tostring(v) } end
  local body = action
  if spec.body == "payload" then body = action.payload end
  return { method = spec.method or "POST", url = spec.url, headers = headers, body = body }
end

return M
