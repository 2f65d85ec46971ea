-- journey.channels.smtp: email over SMTP (sent by libcurl).
--
--   j.channel "mail" { type = "smtp", url = "smtp://mail.acme.test:587", from = "hello@acme.test",
--                      starttls = true,        -- true: required, false: never, nil or "try": when offered
--                      user = j.env "SMTP_USER", password = j.env "SMTP_PASSWORD" }
--   ctx:send("mail", { to = "ada@example.com", subject = "Welcome", text = "Hello Ada" })
--
-- Builds an RFC 5322 message (CRLF lines; UTF-8 text as 8bit; a non-ASCII subject as an
-- RFC 2047 encoded word): From, To, Subject, Date (the action's time), Message-ID
-- <id@journeyd> (stable across retries), MIME-Version, Content-Type. `html` sends a
-- multipart/alternative with both parts. libcurl does the dot-stuffing.
local crypto = require "journey.crypto"
local journey = require "journey"

local M = {}

local function header_safe(s, what)
  s = tostring(s)
  if s:find("[\r\n]") then error("smtp: line break in " .. what, 0) end
  return s
end

local function encode_word(s)
  if not s:find("[\128-\255]") then return s end
  return "=?UTF-8?B?" .. crypto.base64(s) .. "?="
end

local function crlf(text)
  return (tostring(text):gsub("\r\n", "\n"):gsub("\r", "\n"):gsub("\n", "\r\n"))
end

function M.format(spec, action)
  local p = action.payload
  if type(p) ~= "table" then error(("channel %s: an smtp payload must be a table"):format(spec.name), 0) end
  if type(spec.url) ~= "string" then error(("channel %s: smtp needs url (smtp://host:port)"):format(spec.name), 0) end
  local from = header_safe(p.from or spec.from or error(("channel %s: needs from"):format(spec.name), 0), "from")
  local to = p.to or error(("channel %s: payload needs to"):format(spec.name), 0)
  if type(to) == "string" then to = { to } end
  local rcpt = {}
  for i, a in ipairs(to) do rcpt[i] = header_safe(a, "to") end
  local subject = header_safe(p.subject or "", "subject")
  local ms = journey.parse_time(action.time) or 0
  local lines = {
    "From: " .. from,
    "To: " .. table.concat(rcpt, ", "),
    "Subject: " .. encode_word(subject),
    "Date: " .. os.date("!%a, %d %b %Y %H:%M:%S +0000", ms // 1000),
    "Message-ID: <" .. header_safe(action.id, "id") .. "@journeyd>",
    "MIME-Version: 1.0",
  }
  if p.html then
    local b = "journeyd-" .. action.id
    lines[#lines + 1] = 'Content-Type: multipart/alternative; boundary="' .. b .. '"'
    lines[#lines + 1] = ""
    lines[#lines + 1] = "--" .. b
    lines[#lines + 1] = "Content-Type: text/plain; charset=utf-8"
    lines[#lines + 1] = "Content-Transfer-Encoding: 8bit"
    lines[#lines + 1] = ""
    lines[#lines + 1] = crlf(p.text or "")
    lines[#lines + 1] = "--" .. b
    lines[#lines + 1] = "Content-Type: text/html; charset=utf-8"
    lines[#lines + 1] = "Content-Transfer-Encoding: 8bit"
    lines[#lines + 1] = ""
    lines[#lines + 1] = crlf(p.html)
    lines[#lines + 1] = "--" .. b .. "--"
  else
    lines[#lines + 1] = "Content-Type: text/plain; charset=utf-8"
    lines[#lines + 1] = "Content-Transfer-Encoding: 8bit"
    lines[#lines + 1] = ""
    lines[#lines + 1] = crlf(p.text or "")
  end
  local starttls = spec.starttls
  if starttls == nil then starttls = "try" end
  return {
    smtp = true,
    url = spec.url,
    from = from,
    to = rcpt,
    data = table.concat(lines, "\r\n") .. "\r\n",
    starttls = starttls,
    user = spec.user,
    password = spec.password,
  }
end

return M
