-- The store benchmark's journey (tests/bench/store_bench.c): every sign-up schedules ten
-- follow-ups, 30 to 39 days out, so a million people leave ten million pending timers.
local j = require "journey"

j.channel "email" { type = "webhook", url = "http://127.0.0.1:9/unused" }

local stage = { enter = function(ctx) end }
for d = 30, 39 do
  stage[#stage + 1] = j.after(d .. "d", function(ctx) ctx:send("email", { template = "day-" .. d }) end)
end

j.journey "drip" {
  entry = j.on("Signed Up"),
  reentry = "never",
  j.stage "waiting" (stage),
}
