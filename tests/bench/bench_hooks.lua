-- bench_hooks: the hooks of tests/bench/bench.lua, in a module of their own so that
-- tests/bench/floor.c can load and call the very same functions without the engine.
-- Plain functions of ctx only: no `require`, no globals. Numbered in bench_hooks.h.
local H = {}

-- trial_onboarding
function H.welcome(ctx)
  ctx:send("email", { template = "welcome", to = ctx.user.traits.email })
end

function H.first_project_nudge(ctx)
  ctx:send("email", { template = "first-project", to = ctx.user.traits.email })
end

function H.stalled(ctx)
  ctx:send("team", { text = "trial stalled: " .. ctx.user.id })
  ctx:segment_add "at-risk"
end

function H.activated(ctx)
  ctx:segment_remove "at-risk"
  ctx:send("crm", { user = ctx.user.id, lifecycle = "activated" })
end

function H.teammate_invited(ctx)
  ctx:score(10)
end

function H.upgrade_offer(ctx)
  ctx:send("email", { template = "upgrade-offer", to = ctx.user.traits.email })
end

-- lead_scoring
function H.lead_created(ctx)
  ctx:score(20)
  ctx:send("crm", { user = ctx.user.id, lifecycle = "lead", company_size = ctx.user.traits.company_size })
end

function H.lead_content(ctx)
  ctx:score(15)
  if ctx.user.score >= 50 then ctx:segment_add "hot-lead" end
end

function H.sql_handoff(ctx)
  ctx:send("team", { text = "new SQL: " .. ctx.user.id .. " at " .. tostring(ctx.user.traits.company) })
  ctx:send("crm", { user = ctx.user.id, lifecycle = "sql" })
  ctx:segment_add "sql"
end

-- cart (keyed by cart_id)
function H.cart_opened(ctx)
  ctx:set("last_cart", ctx.instance)
end

function H.cart_item_added(ctx)
  ctx:score(1)
end

function H.cart_reminder(ctx)
  ctx:send("email", { template = "cart-reminder", to = ctx.user.traits.email, cart = ctx.instance })
end

function H.cart_last_call(ctx)
  ctx:send("email", { template = "cart-last-call", to = ctx.user.traits.email, cart = ctx.instance })
end

function H.cart_abandoned(ctx)
  ctx:segment_add "cart-abandoner"
end

function H.order_completed(ctx)
  ctx:segment_remove "cart-abandoner"
  ctx:send("crm", { user = ctx.user.id, event = "order", cart = ctx.instance,
                    revenue = ctx.event.properties.revenue })
end

-- rules
function H.pricing_viewed(ctx)
  ctx:score(5)
end

function H.premium_interest(ctx)
  ctx:score(3)
  ctx:segment_add("wants-" .. ctx.event.properties.feature)
end

function H.big_ticket_view(ctx)
  ctx:send("crm", { user = ctx.user.id, product = ctx.event.properties.product_id,
                    price = ctx.event.properties.price })
end

return H
