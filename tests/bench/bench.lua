-- bench.lua: the journey script of `make bench` (tests/bench/run.sh). Three journeys
-- and three rules over the event mix tests/bench/gen.c writes; the hooks live in
-- bench_hooks.lua so that floor.c can call the same functions without the engine.
local j = require "journey"
local h = require "bench_hooks"

-- `journeyd serve` rows measure ingest up to the decision and the outbox; deliveries are
-- measured on their own (deliver_bench), so the daemon leaves actions pending here
j.config { delivery = "off" }

j.channel "email" { type = "webhook", url = "http://127.0.0.1:9/email" }
j.channel "team"  { type = "slack",   url = "http://127.0.0.1:9/slack" }
j.channel "crm"   { type = "webhook", url = "http://127.0.0.1:9/crm" }

-- 1. Trial onboarding, with timers.
j.journey "trial_onboarding" {
  entry   = j.on("Signed Up", { plan = "trial" }),
  goal    = j.on("Subscription Started"),
  exit    = j.on("Account Deleted"),
  reentry = "never",

  j.stage "signed_up" {
    enter = h.welcome,
    j.on("Project Created"):go "activated",
    j.after("2d", h.first_project_nudge),
    j.after("5d", h.stalled):go "dormant",
  },
  j.stage "activated" {
    enter = h.activated,
    j.on("Teammate Invited", h.teammate_invited),
    j.after("7d", h.upgrade_offer),
  },
  j.stage "dormant" {
    j.on("Project Created"):go "activated",
    j.after("9d"):exit(),
  },
}

-- 2. Lead scoring: qualified by identify traits (C predicates), scored by content.
j.journey "lead_scoring" {
  entry   = j.identify { role = { in_ = { "founder", "cto", "vp_engineering", "head_of_product" } },
                         company_size = { gte = 50 } },
  exit    = j.on("Account Deleted"),
  reentry = "never",

  j.stage "lead" {
    enter = h.lead_created,
    j.on("Whitepaper Downloaded", h.lead_content),
    j.on("Demo Requested"):go "sales_qualified",
    j.after("30d"):exit(),
  },
  j.stage "sales_qualified" {
    enter = h.sql_handoff,
    j.after("14d"):exit(),
  },
}

-- 3. Cart, one instance per cart_id.
j.journey "cart" {
  key     = "cart_id",
  entry   = j.on("Product Added", { price = { gt = 0 }, quantity = { gte = 1 } }),
  goal    = j.on("Order Completed", h.order_completed),
  exit    = j.on("Cart Cleared"),
  reentry = "never",

  j.stage "open" {
    enter = h.cart_opened,
    j.on("Product Added", h.cart_item_added),
    j.after("1h", h.cart_reminder),
    j.after("24h", h.cart_last_call):go "abandoned",
  },
  j.stage "abandoned" {
    enter = h.cart_abandoned,
    j.after("7d"):exit(),
  },
}

-- Rules.
j.on("Pricing Viewed", h.pricing_viewed)
j.on("Feature Used", { feature = { in_ = { "export", "api", "sso", "audit_log" } },
                       ["user.traits.plan"] = "trial" }, h.premium_interest)
j.on("Product Viewed", { price = { gte = 500 } }, h.big_ticket_view)
