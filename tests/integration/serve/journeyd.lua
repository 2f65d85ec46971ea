-- Test config for the daemon's black-box tests (tests/integration/test_serve.c).
local j = require "journey"

j.config { listen = "127.0.0.1:0", write_keys = { "from-config" } }
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
