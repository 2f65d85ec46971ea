-- Trial onboarding: sign-up to activation, with nudges, a drop-off alert to the team
-- channel and an at-risk segment.
local j = require "journey"

j.config { listen = "127.0.0.1:8080", data_dir = "./data" }

j.channel "email" { type = "webhook", url = j.env("ESP_URL", "http://127.0.0.1:9101/email") }
j.channel "team"  { type = "slack",   url = j.env("SLACK_URL", "http://127.0.0.1:9101/slack") }
j.channel "crm"   { type = "webhook", url = j.env("CRM_WEBHOOK_URL", "http://127.0.0.1:9101/crm") }

j.journey "trial_onboarding" {
  entry   = j.on("Signed Up", { plan = "trial" }),
  goal    = j.on("Subscription Started"),
  exit    = j.on("Account Deleted"),
  reentry = "never",

  j.stage "signed_up" {
    enter = function(ctx)
      ctx:send("email", { template = "welcome", to = ctx.user.traits.email })
    end,
    j.on("Project Created"):go "activated",
    j.after("2d", function(ctx)
      ctx:send("email", { template = "first-project", to = ctx.user.traits.email })
    end),
    j.after("5d", function(ctx)
      ctx:send("team", { text = "trial stalled: " .. ctx.user.id })
      ctx:segment_add "at-risk"
    end):go "dormant",
  },

  j.stage "activated" {
    enter = function(ctx)
      ctx:segment_remove "at-risk"
      ctx:send("crm", { user = ctx.user.id, lifecycle = "activated" })
    end,
    j.on("Teammate Invited", function(ctx) ctx:score(10) end),
    j.after("7d", function(ctx)
      ctx:send("email", { template = "upgrade-offer", to = ctx.user.traits.email })
    end),
  },

  j.stage "dormant" {
    j.on("Project Created"):go "activated",
    j.after("9d"):exit(),
  },

  alert = { stage = "signed_up", dropoff_above = 0.6, window = "24h", min_sample = 50, channel = "team" },
}

j.on("Pricing Viewed", function(ctx) ctx:score(5) end)
