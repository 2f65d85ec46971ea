-- journey.channels.init: picks a channel's formatter by its type and runs it.
--
--   local channels = require "journey.channels.init"
--   local req = channels.format("crm", action)   -- action: { time, user, journey, stage, channel, payload, id }
--
-- Types: the built-in webhook, slack, postmark, sendgrid, smtp (journey.channels.<type>),
-- and types declared in the script with j.channel_type "name" { format = fn }.
-- A request is { method, url, headers = { {name, value}, ... }, body = string or table
-- (sent as JSON) } or, for email over SMTP, { smtp = true, url, from, to = {...}, data,
-- starttls, user, password }. The engine calls this in the sandbox (deliver.c).
local journey = require "journey"

local M = {}

M.builtin = { webhook = true, slack = true, postmark = true, sendgrid = true, smtp = true }

local function check_request(name, r)
  if type(r) ~= "table" then error(("channel %s: the formatter returned %s, not a request table"):format(name, type(r)), 0) end
  if type(r.url) ~= "string" or r.url == "" then error(("channel %s: the request has no url"):format(name), 0) end
  if r.smtp then
    if type(r.from) ~= "string" then error(("channel %s: the smtp request has no from"):format(name), 0) end
    if type(r.to) ~= "table" or #r.to == 0 then error(("channel %s: the smtp request has no recipients"):format(name), 0) end
    if type(r.data) ~= "string" then error(("channel %s: the smtp request has no data"):format(name), 0) end
  else
    local b = r.body
    if b ~= nil and type(b) ~= "string" and type(b) ~= "table" then
      error(("channel %s: the request body must be a string or a table"):format(name), 0)
    end
    for i, h in ipairs(r.headers or {}) do
      if type(h) ~= "table" or type(h[1]) ~= "string" or type(h[2]) ~= "string" then
        error(("channel %s: header #%d must be { name, value }"):format(name, i), 0)
      end
      if (h[1] .. h[2]):find("[\r\n]") then error(("channel %s: header #%d has a line break"):format(name, i), 0) end
    end
  end
  return r
end

--- The formatter for a channel type (a table with format(spec, action)), or nil.
function M.type(name)
  local reg = journey._registry()
  local t = reg.channel_types and reg.channel_types[name]
  if t then return t end
  if M.builtin[name] then return require("journey.channels." .. name) end
  return nil
end

--- Formats an action for the channel named channel_name: the request table.
function M.format(channel_name, action)
  local spec = journey._registry().channels[channel_name]
  if not spec then error(("no channel named '%s'"):format(tostring(channel_name)), 0) end
  local impl = M.type(spec.type)
  if not impl then error(("channel %s: unknown type '%s'"):format(channel_name, tostring(spec.type)), 0) end
  return check_request(channel_name, impl.format(spec, action))
end

return M
