-- journey.sources.json: a generic JSON webhook.
--
--   local json = require "journey.sources.json"
--   j.source "app" (json {
--     secret = j.env "APP_HOOK_SECRET",     -- HMAC-SHA256 of the raw body ...
--     header = "X-Signature",               -- ... in this header (hex, optional "sha256=" prefix)
--     map = function(body, req) return { type = "track", userId = body.user, event = body.what } end,
--   })
--
-- Without `secret`, requests need a journeyd write key like the tracking API. Without
-- `map`, the body must already be a Segment event or a list of them.
local crypto = require "journey.crypto"

return function(opts)
  opts = opts or {}
  local spec = {}
  if opts.secret then
    local header = (opts.header or "X-Signature"):lower()
    spec.verify = function(req)
      local got = req.headers[header]
      if not got then return false, "missing " .. header end
      got = got:gsub("^sha256=", "")
      local want = crypto.hex(crypto.hmac_sha256(opts.secret, req.body))
      if not crypto.equal(want, got:lower()) then return false, "signature mismatch" end
      return true
    end
  end
  spec.map = opts.map or function(body)
    if type(body) ~= "table" then error("expected a JSON event or a list of events") end
    return body
  end
  return spec
end
