-- Test config for the daemon's black-box tests (tests/integration/test_serve.c).
local j = require "journey"

-- small log segments, so the crash test sees checkpoints remove them
j.config { listen = "127.0.0.1:0", write_keys = { "from-config" }, log_segment_size = 65536 }
j.channel "email" { type = "webhook", url = "http://127.0.0.1:9/never" }

j.journey "onboarding" {
  entry = j.on("Signed Up"),
  goal = j.on("Paid"),
  j.stage "new" {
    enter = function(ctx) ctx:send("email", { template = "welcome", to = ctx.user.traits.email }) end,
    j.after("1s", function(ctx) ctx:send("email", { template = "nudge" }) end):go "nudged",
  },
  j.stage "nudged" {},
}

local hubspot = require "journey.sources.hubspot"
local pipedrive = require "journey.sources.pipedrive"
local json = require "journey.sources.json"
j.source "hubspot" (hubspot { secret = "hs-secret", url = "https://hooks.example.com" })
j.source "pipedrive" (pipedrive { user = "pd", password = "pd-pass" })
j.source "app" (json { secret = "app-secret", header = "X-Signature" })
j.source "open" (json {})
j.source "broken" { map = function(body) error("mapper bug") end }

j.on("CRM Contact Property Changed", function(ctx) ctx:score(1) end)
