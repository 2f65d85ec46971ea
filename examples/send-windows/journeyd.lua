-- Send windows and frequency caps: a weekly digest journey whose emails go out only in
-- the person's office hours, at most two a day, and a team channel that never wakes
-- anyone up at night. Replay it: deferred actions carry "deliver_at"; a capped send is
-- not emitted (the report counts it).
local j = require "journey"

j.config { default_timezone = "Europe/Berlin" }

j.channel "email" {
  type = "webhook", url = j.env("ESP_URL", "https://esp.example.com/send"),
  window = { days = "mon-fri", hours = "09-17", tz = "user" },  -- the person's office hours
  cap = { max = 2, per = "1d" },                                -- two a day at most
}
j.channel "team" { type = "slack", url = j.env("SLACK_URL", "https://hooks.slack.com/services/T/B/X") }

j.journey "onboarding" {
  entry = j.on("Signed Up"),
  goal = j.on("Subscription Started"),
  reentry = "never",

  j.stage "new" {
    enter = function(ctx)
      ctx:send("email", { template = "welcome", to = ctx.user.traits.email })
      -- a receipt is transactional: now, whatever the hour, and not capped
      ctx:send("email", { template = "receipt", to = ctx.user.traits.email }, { window = false, cap = false })
    end,
    j.after("1d", function(ctx) ctx:send("email", { template = "tips", to = ctx.user.traits.email }) end),
  },
}

-- every comment is worth an email, but the cap keeps it to two a day per person
j.on("Comment Received", function(ctx)
  ctx:send("email", { template = "new-comment", to = ctx.user.traits.email, from = ctx.event.properties.author })
end)

-- the team hears about big deals in its own office hours, once an hour at most
j.on("Deal Won", { amount = { gte = 10000 } }, function(ctx)
  ctx:send("team", { text = "big deal won by " .. ctx.user.id }, {
    window = { days = "mon-fri", hours = "08:30-18:00", tz = "Europe/Berlin" },
    cap = { max = 1, per = "1h" },
  })
end)
