-- journey.channels.sendgrid: SendGrid's v3 Mail Send API.
--
--   j.channel "email" { type = "sendgrid", api_key = j.env "SENDGRID_API_KEY",
--                       from = "hello@acme.test", from_name = "Acme",
--                       base_url = "https://api.sendgrid.com" }        -- the default
--   ctx:send("email", { to = "ada@example.com", subject = "Welcome", text = "...", html = "..." })
--   ctx:send("email", { to = "ada@example.com", template = "d-123", data = { name = "Ada" } })
--
-- POST {base}/v3/mail/send, Authorization: Bearer KEY, JSON { personalizations = {{ to,
-- dynamic_template_data }}, from = { email, name }, subject, content = { text/plain,
-- text/html } (plain first, as SendGrid requires) } or template_id. custom_args.journeyd_id
-- carries the action id (it comes back in SendGrid's event webhooks).
local M = {}

local function addresses(v)
  if type(v) == "string" then return { { email = v } } end
  local out = {}
  for i, a in ipairs(v) do out[i] = type(a) == "table" and a or { email = a } end
  return out
end

function M.format(spec, action)
  local p = action.payload
  if type(p) ~= "table" then error(("channel %s: a sendgrid payload must be a table"):format(spec.name), 0) end
  local key = spec.api_key or spec.token
  if type(key) ~= "string" then error(("channel %s: sendgrid needs api_key"):format(spec.name), 0) end
  local to = p.to or error(("channel %s: payload needs to"):format(spec.name), 0)
  local from = p.from or spec.from or error(("channel %s: needs from"):format(spec.name), 0)
  local pers = { to = addresses(to) }
  if p.cc then pers.cc = addresses(p.cc) end
  if p.bcc then pers.bcc = addresses(p.bcc) end
  local body = {
    personalizations = { pers },
    from = { email = from, name = p.from_name or spec.from_name },
    custom_args = { journeyd_id = action.id },
  }
  if p.template ~= nil then
    body.template_id = p.template
    pers.dynamic_template_data = p.data or p.model or {}
  else
    body.subject = p.subject or error(("channel %s: payload needs subject (or template)"):format(spec.name), 0)
    local content = {}
    if p.text then content[#content + 1] = { type = "text/plain", value = p.text } end
    if p.html then content[#content + 1] = { type = "text/html", value = p.html } end
    if #content == 0 then error(("channel %s: payload needs text or html"):format(spec.name), 0) end
    body.content = content
  end
  local base = (spec.base_url or "https://api.sendgrid.com"):gsub("/+$", "")
  return {
    method = "POST",
    url = base .. "/v3/mail/send",
    headers = {
      { "content-type", "application/json" },
      { "authorization", "Bearer " .. key },
    },
    body = body,
  }
end

return M
