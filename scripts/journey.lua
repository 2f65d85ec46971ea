-- journey: the journey language.
--
-- A script describes journeys, rules, channels and config with this module; nothing
-- here runs per event. After the entry file has run, the engine reads the registry and
-- compiles triggers and `where` predicates into C structures; hooks stay Lua functions
-- and are called with a `ctx` (see the README, "Lua API").
local core = require "journey.core" -- C: where(level), duration(text), env(name)

local M = {}

local registry = {
  journeys = {},   -- in definition order
  triggers = {},   -- every trigger made, in creation order (unused ones with a fn are rules)
  channels = {},   -- name -> spec
  channel_list = {},
  sources = {},    -- name -> spec
  source_list = {},
  config = {},
}
local seq = 0
local function next_seq() seq = seq + 1; return seq end

local Trigger = {}
Trigger.__index = Trigger
Trigger.__name = "journey.trigger"

local function is_trigger(v) return getmetatable(v) == Trigger end

local function new_trigger(level, fields)
  fields.loc = core.where(level + 1)
  fields.seq = next_seq()
  local t = setmetatable(fields, Trigger)
  registry.triggers[#registry.triggers + 1] = t
  return t
end

-- on(name [, where] [, fn]) and the same shape for the other event types.
local function event_args(kind, args, first_is_name)
  local i, name, where, fn = 1, nil, nil, nil
  if first_is_name then
    local v = args[1]
    if type(v) == "string" then name = v; i = 2
    elseif v == nil and args.n >= 1 then i = 2 end
  end
  for k = i, args.n do
    local v = args[k]
    if type(v) == "table" and where == nil and fn == nil then where = v
    elseif type(v) == "function" and fn == nil then fn = v
    elseif v ~= nil then
      error(("%s: unexpected argument #%d (%s)"):format(kind, k, type(v)), 3)
    end
  end
  return name, where, fn
end

--- Matches a track event by name: `j.on("Signed Up", { plan = "trial" }, fn)`.
function M.on(name, ...)
  if type(name) ~= "string" or name == "" then
    error("on: the first argument must be an event name", 2)
  end
  local _, where, fn = event_args("on", table.pack(nil, ...), true)
  return new_trigger(2, { kind = "event", type = "track", name = name, where = where, fn = fn })
end

local function typed(kind, has_name)
  return function(...)
    local name, where, fn = event_args(kind, table.pack(...), has_name)
    return new_trigger(2, { kind = "event", type = kind, name = name, where = where, fn = fn })
  end
end
--- `j.identify { plan = "pro" }`: an identify call whose traits match.
M.identify = typed("identify", false)
--- `j.page("Pricing", where, fn)`: a page view (name optional).
M.page = typed("page", true)
M.screen = typed("screen", true)
M.group = typed("group", false)

--- `j.after("2d", fn)`: fires that long after the stage was entered.
function M.after(delay, fn)
  if type(delay) ~= "string" then error("after: the delay must be a string like \"2d\"", 2) end
  local ms, msg = core.duration(delay)
  if not ms then error("after: " .. msg, 2) end
  if fn ~= nil and type(fn) ~= "function" then error("after: the second argument must be a function", 2) end
  return new_trigger(2, { kind = "after", delay = delay, delay_ms = ms, fn = fn })
end

--- `trigger:go "stage"` or `trigger:go("stage", fn)`: move to a stage.
function Trigger:go(stage, fn)
  if type(stage) ~= "string" then error("go: the stage must be a name", 2) end
  if fn ~= nil then
    if type(fn) ~= "function" then error("go: the second argument must be a function", 2) end
    self.fn = fn
  end
  self.target, self.action, self.go_loc = stage, "go", core.where(2)
  return self
end

--- `trigger:exit()`: leave the journey (not converted).
function Trigger:exit(fn)
  if fn ~= nil then self.fn = fn end
  self.action = "exit"
  return self
end

--- `trigger:when(fn)`: a Lua predicate, called only when the C predicates match.
function Trigger:when(fn)
  if type(fn) ~= "function" then error("when: expects a function", 2) end
  self.when_fn = fn
  return self
end

local function take(t, what, loc)
  if not is_trigger(t) then
    error(("%s: expected a trigger (j.on, j.after, ...), got %s"):format(what, type(t)), 3)
  end
  if t.used then
    error(("%s: this trigger (made at %s) is already used elsewhere"):format(what, t.loc), 3)
  end
  t.used = loc or true
  return t
end

local function trigger_list(v, what)
  if v == nil then return {} end
  if is_trigger(v) then return { take(v, what) } end
  if type(v) ~= "table" then error(what .. ": expected a trigger or a list of triggers", 3) end
  local out = {}
  for i, t in ipairs(v) do out[i] = take(t, what) end
  return out
end

--- `j.stage "name" { enter = fn, j.on(...):go "x", j.after("2d"):go "y" }`
function M.stage(name)
  if type(name) ~= "string" or name == "" then error("stage: expects a name", 2) end
  local loc = core.where(2)
  return function(spec)
    if type(spec) ~= "table" then error("stage " .. name .. ": expects a table", 2) end
    local st = { name = name, loc = loc, triggers = {}, enter = spec.enter, is_stage = true }
    if st.enter ~= nil and type(st.enter) ~= "function" then
      error("stage " .. name .. ": enter must be a function", 2)
    end
    for k, v in pairs(spec) do
      if type(k) ~= "number" and k ~= "enter" and k ~= "description" then
        error(("stage %s: unknown field '%s'"):format(name, tostring(k)), 2)
      end
    end
    for i, t in ipairs(spec) do
      st.triggers[i] = take(t, "stage " .. name)
    end
    return st
  end
end

local journey_fields = {
  entry = true, goal = true, exit = true, reentry = true, key = true, alert = true,
  migrate = true, description = true, on_removed_stage = true,
}

--- `j.journey "name" { entry = ..., goal = ..., exit = ..., reentry = ..., key = ..., stages... }`
function M.journey(name)
  if type(name) ~= "string" or name == "" then error("journey: expects a name", 2) end
  local loc = core.where(2)
  return function(spec)
    if type(spec) ~= "table" then error("journey " .. name .. ": expects a table", 2) end
    for _, j in ipairs(registry.journeys) do
      if j.name == name then error(("journey %s: already defined at %s"):format(name, j.loc), 2) end
    end
    for k in pairs(spec) do
      if type(k) ~= "number" and not journey_fields[k] then
        error(("journey %s: unknown field '%s'"):format(name, tostring(k)), 2)
      end
    end
    if spec.entry == nil then error("journey " .. name .. ": needs an entry trigger", 2) end
    local jn = {
      name = name, loc = loc, seq = next_seq(),
      entry = take(spec.entry, "journey " .. name .. " entry"),
      goal = trigger_list(spec.goal, "journey " .. name .. " goal"),
      exit = trigger_list(spec.exit, "journey " .. name .. " exit"),
      reentry = spec.reentry or "never",
      key = spec.key,
      alert = spec.alert,
      migrate = spec.migrate,
      stages = {},
    }
    if jn.key ~= nil and type(jn.key) ~= "string" then
      error("journey " .. name .. ": key must be a property path", 2)
    end
    for i, st in ipairs(spec) do
      if type(st) ~= "table" or not st.is_stage then
        error(("journey %s: item #%d is not a j.stage"):format(name, i), 2)
      end
      jn.stages[i] = st
    end
    if #jn.stages == 0 then error("journey " .. name .. ": needs at least one stage", 2) end
    registry.journeys[#registry.journeys + 1] = jn
    return jn
  end
end

local function named_spec(kind, list, map)
  return function(name)
    if type(name) ~= "string" or name == "" then error(kind .. ": expects a name", 2) end
    local loc = core.where(2)
    return function(spec)
      if type(spec) ~= "table" then error(kind .. " " .. name .. ": expects a table", 2) end
      if map[name] then error(("%s %s: already defined at %s"):format(kind, name, map[name].loc), 2) end
      spec.name, spec.loc = name, loc
      map[name] = spec
      list[#list + 1] = spec
      return spec
    end
  end
end

--- `j.channel "email" { type = "webhook", url = ... }`: where actions go.
M.channel = named_spec("channel", registry.channel_list, registry.channels)
--- `j.source "hubspot" { verify = ..., map = fn }`: a CRM webhook mapper.
M.source = named_spec("source", registry.source_list, registry.sources)

local channel_types = {}
registry.channel_types = channel_types
local builtin_channel_types = { webhook = true, slack = true, postmark = true, sendgrid = true, smtp = true }
--- `j.channel_type "name" { format = function(spec, action) return request end }`: a channel
--- type of your own, in Lua (see scripts/journey/channels/ for the request shape).
function M.channel_type(name)
  if type(name) ~= "string" or name == "" then error("channel_type: expects a name", 2) end
  local loc = core.where(2)
  return function(spec)
    if type(spec) ~= "table" or type(spec.format) ~= "function" then
      error("channel_type " .. name .. ": expects { format = function(spec, action) ... end }", 2)
    end
    if builtin_channel_types[name] then error("channel_type " .. name .. ": is a built-in type", 2) end
    if channel_types[name] then
      error(("channel_type %s: already defined at %s"):format(name, channel_types[name].loc), 2)
    end
    spec.name, spec.loc = name, loc
    channel_types[name] = spec
    return spec
  end
end

--- `j.config { listen = "127.0.0.1:8080", data_dir = "./data" }`
function M.config(t)
  if type(t) ~= "table" then error("config: expects a table", 2) end
  for k, v in pairs(t) do registry.config[k] = v end
  if t.default_timezone ~= nil then registry.default_timezone_loc = core.where(2) end
end

--- `j.env("NAME", default)`: an environment variable (for secrets and URLs).
function M.env(name, default)
  if type(name) ~= "string" then error("env: expects a variable name", 2) end
  local v = core.env(name)
  if v == nil then return default end
  return v
end

--- `j.duration "2d"` -> milliseconds.
function M.duration(text)
  local ms, msg = core.duration(text)
  if not ms then error(msg, 2) end
  return ms
end

--- `j.iso_time(ms)`: milliseconds since the epoch as ISO 8601 UTC.
function M.iso_time(ms) return core.iso(math.tointeger(ms) or error("iso_time: expects integer milliseconds", 2)) end
--- `j.parse_time(text)`: ISO 8601 to milliseconds, or nil.
function M.parse_time(text) return core.parse_time(text) end

local array_mt = core.array_mt
--- `j.array {}`: marks a table as a JSON array (an empty table is otherwise an object).
function M.array(t)
  return setmetatable(t or {}, array_mt)
end
M._array_mt = array_mt

-- The engine reads this after the entry file has run.
function M._registry() return registry end

return M
