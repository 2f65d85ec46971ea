-- CRM sidecar: journeyd next to HubSpot (or Pipedrive). CRM webhooks arrive at
-- /v1/sources/hubspot and /v1/sources/pipedrive, are verified and mapped to events by
-- the shipped mappers, and drive a deal journey; product events arrive on /v1/*.
local j = require "journey"
local hubspot = require "journey.sources.hubspot"
local pipedrive = require "journey.sources.pipedrive"

j.config {
  listen = "127.0.0.1:8080",
  data_dir = "./data",
  write_keys = { j.env("JOURNEYD_WRITE_KEY", "dev-write-key") },
}

j.source "hubspot" (hubspot {
  secret = j.env("HUBSPOT_CLIENT_SECRET", "dev-hubspot-secret"),
  url = j.env("PUBLIC_URL", "https://hooks.example.com"),
})
j.source "pipedrive" (pipedrive {
  user = j.env("PIPEDRIVE_HOOK_USER", "pipedrive"),
  password = j.env("PIPEDRIVE_HOOK_PASSWORD", "dev-pipedrive-password"),
})

j.channel "crm"  { type = "webhook", url = j.env("CRM_WEBHOOK_URL", "http://127.0.0.1:9101/crm") }
j.channel "team" { type = "slack",   url = j.env("SLACK_URL", "http://127.0.0.1:9101/slack") }
j.channel "email" { type = "webhook", url = j.env("ESP_URL", "http://127.0.0.1:9101/email") }

-- A deal enters "proposal"; if it does not move within 7 days the owner's team hears
-- about it; closed-won starts onboarding, closed-lost leaves.
j.journey "deal_pipeline" {
  entry = j.on("CRM Deal Stage Changed", { stage = "presentationscheduled" }),
  goal  = j.on("CRM Deal Stage Changed", { stage = "closedwon" }, function(ctx)
    ctx:send("crm", { deal = ctx.event.properties.deal_id, lifecycle = "customer" })
    ctx:send("team", { text = "deal won: " .. tostring(ctx.event.properties.deal_id) })
  end),
  exit  = j.on("CRM Deal Stage Changed", { stage = "closedlost" }),
  reentry = "always",

  j.stage "presenting" {
    j.on("CRM Deal Stage Changed", { stage = "decisionmakerboughtin" }):go "deciding",
    j.after("7d", function(ctx)
      ctx:send("team", { text = "deal stalled in presentation: " .. ctx.user.id })
    end),
  },
  j.stage "deciding" {
    j.after("3d", function(ctx)
      ctx:send("team", { text = "decision pending for 3 days: " .. ctx.user.id })
    end),
  },
}

-- New CRM contacts with an email get a welcome once.
j.journey "crm_contact_welcome" {
  entry = j.on("CRM Contact Property Changed", { property = "email", value = { exists = true } }),
  j.stage "welcomed" {
    enter = function(ctx) ctx:send("email", { template = "crm-welcome", to = ctx.event.properties.value }) end,
  },
}
