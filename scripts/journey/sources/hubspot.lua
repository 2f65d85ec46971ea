-- journey.sources.hubspot: HubSpot webhooks (v3 signatures) as journeyd events.
--
--   local hubspot = require "journey.sources.hubspot"
--   j.source "hubspot" (hubspot {
--     secret = j.env "HUBSPOT_CLIENT_SECRET",      -- the app's client secret
--     url = "https://hooks.example.com",           -- the public base URL HubSpot calls
--   })
--
-- Verification: X-HubSpot-Signature-v3 is base64(HMAC-SHA256(secret, method .. uri ..
-- body .. timestamp)) where uri is the full URL HubSpot called and timestamp is the
-- X-HubSpot-Request-Timestamp header (ms). Requests older than 5 minutes are refused.
-- Compared in constant time.
--
-- Mapping (one HubSpot event -> journeyd events; messageId "hubspot:<eventId>" so
-- HubSpot's retries are dropped as duplicates):
--   contact.creation        identify {hubspot_contact_id} + track "CRM Contact Created"
--   contact.propertyChange  identify {<property> = value} + track "CRM Contact Property Changed"
--   contact.deletion        track "CRM Contact Deleted"
--   deal.creation           track "CRM Deal Created"
--   deal.propertyChange     track "CRM Deal Stage Changed" (dealstage) or "CRM Deal Property Changed"
--   anything else           track "CRM <subscriptionType>"
-- The person is "hubspot-contact-<objectId>" (deals: "hubspot-deal-<objectId>") unless
-- opts.user_id(event) says otherwise (e.g. look up your own id).
local crypto = require "journey.crypto"
local journey = require "journey"

local MAX_AGE_MS = 5 * 60 * 1000

-- HubSpot signs the URI with these characters decoded
local decode = {
  ["%3A"] = ":", ["%2F"] = "/", ["%3F"] = "?", ["%40"] = "@", ["%21"] = "!", ["%24"] = "$",
  ["%27"] = "'", ["%28"] = "(", ["%29"] = ")", ["%2A"] = "*", ["%2C"] = ",", ["%3B"] = ";",
}

local function signed_uri(opts, req)
  local base = opts.url or ("https://" .. (req.headers.host or "localhost"))
  base = base:gsub("/+$", "")
  return (base .. req.uri):gsub("%%%x%x", function(c) return decode[c:upper()] or c end)
end

local function verify(opts)
  return function(req)
    local sig = req.headers["x-hubspot-signature-v3"]
    local ts = req.headers["x-hubspot-request-timestamp"]
    if not sig or not ts then return false, "missing X-HubSpot-Signature-v3 or X-HubSpot-Request-Timestamp" end
    local t = math.tointeger(tonumber(ts))
    if not t then return false, "bad X-HubSpot-Request-Timestamp" end
    if req.time - t > MAX_AGE_MS then return false, "timestamp older than 5 minutes" end
    if t - req.time > MAX_AGE_MS then return false, "timestamp in the future" end
    local msg = req.method .. signed_uri(opts, req) .. req.body .. ts
    local want = crypto.base64(crypto.hmac_sha256(opts.secret, msg))
    if not crypto.equal(want, sig) then return false, "signature mismatch" end
    return true
  end
end

local function person(opts, ev)
  if opts.user_id then return opts.user_id(ev) end
  local kind = (ev.subscriptionType or ""):match("^(%w+)%.") or "object"
  return "hubspot-" .. kind .. "-" .. tostring(ev.objectId)
end

local function map(opts)
  return function(body, req)
    if type(body) ~= "table" then error("HubSpot sends a JSON array of events") end
    local list = body[1] and body or { body }
    local out = {}
    for _, ev in ipairs(list) do
      local user = person(opts, ev)
      local id = "hubspot:" .. tostring(ev.eventId)
      local ts = math.tointeger(ev.occurredAt) and journey.iso_time(math.tointeger(ev.occurredAt)) or nil
      local st = ev.subscriptionType or "unknown"
      local props = {
        hubspot_event_id = ev.eventId, portal_id = ev.portalId, object_id = ev.objectId,
        subscription_type = st, change_source = ev.changeSource,
      }
      local function track(name, extra)
        for k, v in pairs(extra or {}) do props[k] = v end
        out[#out + 1] = { type = "track", userId = user, event = name, properties = props,
                          timestamp = ts, messageId = id, context = { integration = { name = "hubspot" } } }
      end
      local function identify(traits)
        out[#out + 1] = { type = "identify", userId = user, traits = traits, timestamp = ts,
                          messageId = id .. ":identify" }
      end
      if st == "contact.creation" then
        identify { hubspot_contact_id = ev.objectId }
        track "CRM Contact Created"
      elseif st == "contact.propertyChange" and ev.propertyName then
        identify { [ev.propertyName] = ev.propertyValue }
        track("CRM Contact Property Changed", { property = ev.propertyName, value = ev.propertyValue })
      elseif st == "contact.deletion" then
        track "CRM Contact Deleted"
      elseif st == "deal.creation" then
        track("CRM Deal Created", { deal_id = ev.objectId })
      elseif st == "deal.propertyChange" and ev.propertyName == "dealstage" then
        track("CRM Deal Stage Changed", { deal_id = ev.objectId, stage = ev.propertyValue })
      elseif st == "deal.propertyChange" then
        track("CRM Deal Property Changed", { deal_id = ev.objectId, property = ev.propertyName, value = ev.propertyValue })
      else
        track("CRM " .. st)
      end
    end
    return out
  end
end

return function(opts)
  opts = opts or {}
  if type(opts.secret) ~= "string" or opts.secret == "" then
    error("hubspot source: opts.secret (the app's client secret) is required", 2)
  end
  return { verify = verify(opts), map = map(opts) }
end
