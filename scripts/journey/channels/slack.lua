-- journey.channels.slack: a Slack incoming webhook.
--
--   j.channel "team" { type = "slack", url = j.env "SLACK_URL" }
--   ctx:send("team", "trial stalled: " .. ctx.user.id)           -- a string is the text
--   ctx:send("team", { text = "fallback", blocks = { ... } })     -- or text and blocks
--
-- Slack takes { text, blocks } as JSON; `text` is required with blocks too (it is the
-- notification fallback), so a payload with blocks and no text gets a generic one.
local M = {}

function M.format(spec, action)
  if type(spec.url) ~= "string" or spec.url == "" then
    error(("channel %s: slack needs url"):format(spec.name), 0)
  end
  local p = action.payload
  local body
  if type(p) == "table" then
    body = { text = p.text, blocks = p.blocks }
    if body.text == nil then
      body.text = body.blocks and ("journeyd: " .. tostring(action.journey or action.channel))
        or error(("channel %s: a slack payload needs text or blocks"):format(spec.name), 0)
    end
  else
    body = { text = tostring(p) }
  end
  return {
    method = "POST",
    url = spec.url,
    headers = { { "content-type", "application/json" }, { "user-agent", "journeyd" } },
    body = body,
  }
end

return M
