-- journey.channels.postmark: Postmark's email API.
--
--   j.channel "email" { type = "postmark", token = j.env "POSTMARK_SERVER_TOKEN",
--                       from = "Acme <hello@acme.test>", stream = "outbound",
--                       base_url = "https://api.postmarkapp.com" }     -- the default
--   ctx:send("email", { to = "ada@example.com", subject = "Welcome", text = "...", html = "..." })
--   ctx:send("email", { to = "ada@example.com", template = "welcome", model = { name = "Ada" } })
--
-- Plain messages: POST {base}/email with From, To, Subject, TextBody/HtmlBody,
-- MessageStream. With `template` (an alias; a number is a template id): POST
-- {base}/email/withTemplate with TemplateAlias (or TemplateId) and TemplateModel.
-- Auth: X-Postmark-Server-Token. Metadata.journeyd_id carries the action id.
local M = {}

function M.format(spec, action)
  local p = action.payload
  if type(p) ~= "table" then error(("channel %s: a postmark payload must be a table"):format(spec.name), 0) end
  local token = spec.token or spec.server_token
  if type(token) ~= "string" then error(("channel %s: postmark needs token"):format(spec.name), 0) end
  local to = p.to or error(("channel %s: payload needs to"):format(spec.name), 0)
  if type(to) == "table" then to = table.concat(to, ", ") end
  local base = (spec.base_url or "https://api.postmarkapp.com"):gsub("/+$", "")
  local body = {
    From = p.from or spec.from or error(("channel %s: needs from"):format(spec.name), 0),
    To = to,
    Cc = p.cc, Bcc = p.bcc, ReplyTo = p.reply_to or spec.reply_to, Tag = p.tag,
    MessageStream = p.stream or spec.stream or "outbound",
    Metadata = { journeyd_id = action.id },
  }
  local path
  if p.template ~= nil then
    path = "/email/withTemplate"
    if math.type(p.template) == "integer" then body.TemplateId = p.template else body.TemplateAlias = p.template end
    body.TemplateModel = p.model or {}
  else
    path = "/email"
    body.Subject = p.subject or error(("channel %s: payload needs subject (or template)"):format(spec.name), 0)
    body.TextBody, body.HtmlBody = p.text, p.html
    if body.TextBody == nil and body.HtmlBody == nil then
      error(("channel %s: payload needs text or html"):format(spec.name), 0)
    end
  end
  return {
    method = "POST",
    url = base .. path,
    headers = {
      { "accept", "application/json" },
      { "content-type", "application/json" },
      { "x-postmark-server-token", token },
    },
    body = body,
  }
end

return M
