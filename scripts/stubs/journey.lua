---@meta journey
-- LuaCATS type stubs for the `journey` module (editor completion and checks with
-- lua-language-server: add scripts/stubs to "workspace.library"). Not loaded by journeyd.

---@class journey.Trigger
local Trigger = {}

---Move to a stage, optionally running fn first.
---@param stage string
---@param fn? fun(ctx: journey.Ctx)
---@return journey.Trigger
function Trigger:go(stage, fn) end

---Leave the journey (not converted), optionally running fn first.
---@param fn? fun(ctx: journey.Ctx)
---@return journey.Trigger
function Trigger:exit(fn) end

---A Lua predicate, asked only when the C predicates match.
---@param fn fun(ctx: journey.Ctx): boolean
---@return journey.Trigger
function Trigger:when(fn) end

---@class journey.User
---@field id string
---@field traits table<string, any>
---@field segments table<string, boolean>
---@field score number

---@class journey.Event
---@field type "track"|"identify"|"page"|"screen"|"group"|"alias"|"timer"
---@field event? string
---@field name? string
---@field messageId string
---@field userId string
---@field anonymousId? string
---@field timestamp string ISO 8601
---@field properties table<string, any>
---@field traits table<string, any>
---@field context table<string, any>

---@class journey.Ctx
---@field user journey.User
---@field event journey.Event
---@field journey? string
---@field stage? string
---@field instance? string the key of a keyed journey
---@field now string the engine clock, ISO 8601
---@field time integer the engine clock, ms
---@field entered_at? string when the current stage was entered
---@field rule string
local Ctx = {}

---A send window: outside it an action is deferred (decided now, `deliver_at` later).
---@class journey.Window
---@field days? string "mon-fri", "sat,sun", "mon-wed,fri" (every day when absent)
---@field hours? string "09-17", "09:30-17:00", "22-06" (end exclusive; all day when absent)
---@field tz? "user"|string "user": the person's `timezone` trait; or an IANA name; default: j.config default_timezone

---A frequency cap per person and channel: sends beyond it are suppressed.
---@class journey.Cap
---@field max integer sends at most ...
---@field per string ... within any sliding period this long ("7d")

---@class journey.SendOptions
---@field window? journey.Window|false overrides the channel's (false: none)
---@field cap? journey.Cap|false overrides the channel's (false: none)

---Decide an action on a declared channel.
---@param channel string
---@param payload? table|string
---@param options? journey.SendOptions
function Ctx:send(channel, payload, options) end

---Set profile traits (nil removes).
---@overload fun(self: journey.Ctx, traits: table<string, any>)
---@param name string
---@param value any
function Ctx:set(name, value) end

---@param delta number
function Ctx:score(delta) end

---@param name string
function Ctx:segment_add(name) end

---@param name string
function Ctx:segment_remove(name) end

---Move this instance to a stage after the hook returns.
---@param stage string
function Ctx:go(stage) end

---Leave the journey after the hook returns.
function Ctx:exit() end

---@param ... any
function Ctx:log(...) end

---@alias journey.Where table<string, any>

---@class journey.Stage

---@class journey.StageSpec
---@field enter? fun(ctx: journey.Ctx)
---@field description? string
---@field [integer] journey.Trigger

---@class journey.Alert
---@field stage? string the stage watched; without it (conversion_below only) the whole journey
---@field dropoff_above? number fires when the stage's drop-off (0..1) goes above it
---@field conversion_below? number fires when the conversion (0..1) goes below it
---@field window? "1h"|"24h"|"7d"
---@field min_sample? integer no state change while fewer people are in the figure (20)
---@field channel string where the fired / recovered actions go

---@class journey.JourneySpec
---@field entry journey.Trigger
---@field goal? journey.Trigger|journey.Trigger[]
---@field exit? journey.Trigger|journey.Trigger[]
---@field reentry? "never"|"always"|string
---@field key? string
---@field alert? journey.Alert|journey.Alert[]
---@field migrate? table<string, string> on a reload that changes the journey's version, where active people go: old stage = "new stage" or "exit"; `["*"]` for stages not named nor kept
---@field description? string
---@field [integer] journey.Stage

---@class journey.ChannelSpec
---@field type "webhook"|"slack"|"postmark"|"sendgrid"|"smtp"|string
---@field url? string
---@field secret? string
---@field secrets? string[] several "whsec_" secrets (rotation): one signature each
---@field base_url? string postmark / sendgrid API base (tests point it at loopback)
---@field token? string postmark server token
---@field api_key? string sendgrid API key
---@field from? string
---@field starttls? boolean|"try" smtp
---@field allow_hosts? string[] hosts this channel may reach ("*.example.com" too)
---@field allow_private? boolean allow RFC 1918 / ULA / CGNAT addresses
---@field allow_loopback? boolean allow 127.0.0.0/8 and ::1 (tests, sidecars)
---@field concurrency? integer requests in flight at most (16)
---@field timeout? string|integer per request ("15s")
---@field window? journey.Window sends outside it are deferred
---@field cap? journey.Cap sends beyond it are suppressed
---@field retry? string[] the retry schedule ({"5s", "5m", "30m", "2h", ...})

---@class journey.ChannelRequest
---@field method? string
---@field url string
---@field headers? {[1]: string, [2]: string}[]
---@field body? string|table a table is sent as JSON
---@field smtp? boolean
---@field from? string
---@field to? string[]
---@field data? string

---@class journey.ChannelTypeSpec
---@field format fun(spec: journey.ChannelSpec, action: table): journey.ChannelRequest

---@class journey.SourceRequest
---@field method string
---@field uri string
---@field path string
---@field query string
---@field body string
---@field headers table<string, string>
---@field time integer
---@field json? any

---@class journey.SourceSpec
---@field verify? fun(req: journey.SourceRequest): boolean, string?
---@field map fun(body: any, req: journey.SourceRequest): table|table[]|nil

---@class journey
local j = {}

---@param name string
---@param where? journey.Where
---@param fn? fun(ctx: journey.Ctx)
---@return journey.Trigger
function j.on(name, where, fn) end

---@param where? journey.Where
---@param fn? fun(ctx: journey.Ctx)
---@return journey.Trigger
function j.identify(where, fn) end

---@param name? string
---@param where? journey.Where
---@param fn? fun(ctx: journey.Ctx)
---@return journey.Trigger
function j.page(name, where, fn) end

---@param name? string
---@param where? journey.Where
---@param fn? fun(ctx: journey.Ctx)
---@return journey.Trigger
function j.screen(name, where, fn) end

---@param where? journey.Where
---@param fn? fun(ctx: journey.Ctx)
---@return journey.Trigger
function j.group(where, fn) end

---@param delay string "90s", "15m", "2h", "3d", "1w"
---@param fn? fun(ctx: journey.Ctx)
---@return journey.Trigger
function j.after(delay, fn) end

---@param name string
---@return fun(spec: journey.StageSpec): journey.Stage
function j.stage(name) end

---@param name string
---@return fun(spec: journey.JourneySpec)
function j.journey(name) end

---@param name string
---@return fun(spec: journey.ChannelSpec)
function j.channel(name) end

---@param name string
---@return fun(spec: journey.SourceSpec)
function j.source(name) end

---A channel type of your own: format(spec, action) returns the request to send.
---@param name string
---@return fun(spec: journey.ChannelTypeSpec)
function j.channel_type(name) end

---@param settings {listen?: string, data_dir?: string, write_keys?: string[], admin_keys?: string[], stream_listen?: string, overdue_limit?: string, quarantine?: {errors?: integer, window?: string}, default_timezone?: string}
function j.config(settings) end

---@param name string
---@param default? string
---@return string?
function j.env(name, default) end

---@param text string
---@return integer
function j.duration(text) end

---@param ms integer
---@return string
function j.iso_time(ms) end

---@param text string
---@return integer?
function j.parse_time(text) end

---@generic T: table
---@param t? T
---@return T
function j.array(t) end

return j
