-- journey.sources.pipedrive: Pipedrive webhooks v2 as journeyd events.
--
--   local pipedrive = require "journey.sources.pipedrive"
--   j.source "pipedrive" (pipedrive { user = j.env "PD_HOOK_USER", password = j.env "PD_HOOK_PASSWORD" })
--
-- Verification: the HTTP Basic credentials set on the webhook (http_auth_user /
-- http_auth_password), compared in constant time.
--
-- Mapping of { meta = { action, entity, entity_id, ... }, data = {...}, previous = {...} }:
--   person create/change   identify (name, email, phone, org_id) + track "CRM Person Created|Changed"
--   deal with a new stage  track "CRM Deal Stage Changed" {deal_id, stage_id, previous_stage_id, ...}
--   deal won / lost        track "CRM Deal Won" / "CRM Deal Lost"
--   other                  track "CRM <Entity> <Action>"
-- The person is "pipedrive-person-<id>" (a deal's person_id when it has one, else
-- "pipedrive-deal-<id>") unless opts.user_id(body) says otherwise. messageId is derived
-- from the entity, id, action and update time, so redeliveries are dropped.
local crypto = require "journey.crypto"

local function verify(opts)
  local want = "Basic " .. crypto.base64(opts.user .. ":" .. opts.password)
  return function(req)
    local got = req.headers.authorization
    if not got then return false, "missing Authorization" end
    if not crypto.equal(want, got) then return false, "wrong credentials" end
    return true
  end
end

local function first_value(list)
  if type(list) ~= "table" then return nil end
  local item = list[1]
  if type(item) == "table" then return item.value end
  return item
end

local function cap(s) return (tostring(s):gsub("^%l", string.upper)) end

local function map(opts)
  return function(body)
    if type(body) ~= "table" or type(body.meta) ~= "table" then error("not a Pipedrive v2 webhook (no meta)") end
    local meta, data, prev = body.meta, body.data or {}, body.previous or {}
    local entity, action, id = meta.entity, meta.action, meta.entity_id or data.id
    local user
    if opts.user_id then user = opts.user_id(body)
    elseif entity == "person" then user = "pipedrive-person-" .. tostring(id)
    elseif data.person_id then user = "pipedrive-person-" .. tostring(data.person_id)
    else user = "pipedrive-" .. tostring(entity) .. "-" .. tostring(id) end
    local stamp = data.update_time or meta.timestamp or ""
    local mid = ("pipedrive:%s:%s:%s:%s"):format(entity, tostring(id), tostring(action), tostring(stamp))
    local ctx = { integration = { name = "pipedrive" } }
    local out = {}
    local function track(name, props)
      props = props or {}
      props.pipedrive_entity, props.pipedrive_id, props.action = entity, id, action
      out[#out + 1] = { type = "track", userId = user, event = name, properties = props,
                        messageId = mid .. ":" .. name, context = ctx }
    end
    if entity == "person" and (action == "create" or action == "change") then
      out[#out + 1] = {
        type = "identify", userId = user, messageId = mid .. ":identify", context = ctx,
        traits = { name = data.name, email = first_value(data.emails or data.email),
                   phone = first_value(data.phones or data.phone), org_id = data.org_id, pipedrive_person_id = id },
      }
      track(action == "create" and "CRM Person Created" or "CRM Person Changed")
    elseif entity == "deal" and action == "change" and prev.stage_id ~= nil and prev.stage_id ~= data.stage_id then
      track("CRM Deal Stage Changed", { deal_id = id, stage_id = data.stage_id, previous_stage_id = prev.stage_id,
                                        pipeline_id = data.pipeline_id, value = data.value, currency = data.currency })
    elseif entity == "deal" and action == "change" and prev.status ~= nil and data.status == "won" then
      track("CRM Deal Won", { deal_id = id, value = data.value, currency = data.currency })
    elseif entity == "deal" and action == "change" and prev.status ~= nil and data.status == "lost" then
      track("CRM Deal Lost", { deal_id = id, lost_reason = data.lost_reason })
    else
      track("CRM " .. cap(entity or "object") .. " " .. cap(action or "event"))
    end
    return out
  end
end

return function(opts)
  opts = opts or {}
  if type(opts.user) ~= "string" or type(opts.password) ~= "string" then
    error("pipedrive source: opts.user and opts.password (the webhook's Basic auth) are required", 2)
  end
  return { verify = verify(opts), map = map(opts) }
end
