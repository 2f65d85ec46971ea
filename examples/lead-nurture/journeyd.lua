-- Lead nurture (B2B): score leads from page views, content downloads and firmographics,
-- run a nurture email sequence, hand hot leads to sales through the CRM webhook, and
-- re-engage (then mark as cold) leads that go quiet.
local j = require "journey"

j.config { listen = "127.0.0.1:8080", data_dir = "./data" }

j.channel "email" { type = "webhook", url = j.env("ESP_URL", "http://127.0.0.1:9101/email") }
j.channel "crm"   { type = "webhook", url = j.env("CRM_WEBHOOK_URL", "http://127.0.0.1:9101/crm") }
j.channel "sales" { type = "slack",   url = j.env("SALES_SLACK_URL", "http://127.0.0.1:9101/slack") }

local HOT = 60 -- the score at which a lead goes to sales

-- Scoring rules. They are defined before the journey, so on every event they run first
-- and the journey's score predicates see the updated score.
j.page("Pricing", function(ctx) ctx:score(20) end)
j.page(nil, { path = { in_ = { "/customers", "/case-studies" } } }, function(ctx) ctx:score(10) end)
j.page(nil, { path = { prefix = "/blog/" } }, function(ctx) ctx:score(3) end)
j.on("Content Downloaded", { content_type = { in_ = { "whitepaper", "case-study", "report" } } },
  function(ctx) ctx:score(15) end)
j.on("Content Downloaded", { title = { contains = "ROI" } }, function(ctx) ctx:score(10) end) -- bottom of funnel
-- Firmographic fit, counted once per person: the "icp" segment remembers it.
j.identify({ company_size = { gte = 200 }, title = { exists = true }, ["user.segments"] = { ne = "icp" } },
  function(ctx)
    ctx:score(20)
    ctx:segment_add "icp"
  end)

-- A cold lead that shows up again: tell sales, drop the segment.
j.page(nil, { ["user.segments"] = "cold" }, function(ctx)
  ctx:segment_remove "cold"
  local page = ctx.event.name or ctx.event.properties.path or "a page"
  ctx:send("sales", { text = "cold lead is back: " .. (ctx.user.traits.email or ctx.user.id) .. " viewed " .. page })
end)

local function email(template)
  return function(ctx)
    ctx:send("email", { template = template, to = ctx.user.traits.email })
  end
end

local function is_hot(ctx) return ctx.user.score >= HOT end

j.journey "lead_nurture" {
  entry   = j.on("Form Submitted", {
    form_id = { in_ = { "ebook-download", "newsletter", "webinar-signup" } },
    ["user.traits.email"] = { exists = true },
  }),
  goal    = j.on("Demo Booked"),
  exit    = j.on("Email Unsubscribed"),
  reentry = "30d",

  -- The nurture sequence. A lead that gets hot meanwhile goes to sales at once.
  j.stage "nurturing" {
    enter = email "nurture-welcome",
    j.page(nil, { ["user.score"] = { gte = HOT } }):go "sales_ready",
    j.on("Content Downloaded"):when(is_hot):go "sales_ready",
    j.after("2d", email "nurture-1-guide"),
    j.after("5d", email "nurture-2-case-study"),
    j.after("9d", email "nurture-3-webinar"):go "watching",
  },

  -- Sequence done: any activity restarts the 14-day inactivity clock.
  j.stage "watching" {
    j.page(nil, { ["user.score"] = { gte = HOT } }):go "sales_ready",
    j.on("Content Downloaded"):when(is_hot):go "sales_ready",
    j.page(nil):go "watching",
    j.on("Content Downloaded"):go "watching",
    j.after("14d", email "re-engagement"):go "re_engaging",
  },

  -- Re-engagement sent: activity brings the lead back, a further week of silence marks it cold.
  j.stage "re_engaging" {
    j.page(nil):go "watching",
    j.on("Content Downloaded"):go "watching",
    j.after("7d", function(ctx)
      ctx:segment_add "cold"
      ctx:send("crm", { action = "update_lead", user_id = ctx.user.id, email = ctx.user.traits.email,
                        lifecycle_stage = "cold" })
    end):exit(),
  },

  -- Hand-off: the CRM gets the lead with its traits and score; sales gets a ping.
  j.stage "sales_ready" {
    enter = function(ctx)
      local t = ctx.user.traits
      ctx:send("crm", { action = "upsert_lead", user_id = ctx.user.id, lifecycle_stage = "sales-qualified",
                        score = ctx.user.score, lead = t })
      ctx:send("sales", { text = ("sales-ready lead: %s, %s at %s (score %d)"):format(
        t.name or ctx.user.id, t.title or "?", t.company or "?", ctx.user.score) })
    end,
    j.after("3d", function(ctx)
      ctx:send("sales", { text = "no demo booked 3 days after hand-off: " .. (ctx.user.traits.email or ctx.user.id) })
    end),
  },
}
