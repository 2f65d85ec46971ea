-- Cart abandonment: one journey instance per cart (key = "cart_id"). Reminders 1h and 24h
-- after the last change to the cart, again after checkout was started, and a discount
-- code only for large carts. A person can have several carts; each goes its own way.
local j = require "journey"

j.config { listen = "127.0.0.1:8080", data_dir = "./data" }

j.channel "email" { type = "webhook", url = j.env("ESP_URL", "http://127.0.0.1:9101/email") }

local LARGE = 150 -- carts worth more than this get a discount when checkout stalls

-- The cart's contents live in the profile trait `carts` (cart id -> { items, value }),
-- so the reminders, which fire on timers, can list them.
local function carts_of(ctx)
  local c = ctx.user.traits.carts
  if type(c) ~= "table" then c = {} end
  return c
end

local function cents(x) return math.floor(x * 100 + 0.5) / 100 end

local function add_item(ctx)
  local p = ctx.event.properties
  local carts = carts_of(ctx)
  local cart = carts[ctx.instance] or { items = j.array {}, value = 0 }
  local qty = p.quantity or 1
  cart.items[#cart.items + 1] = { name = p.name, price = p.price, quantity = qty }
  cart.value = cents(cart.value + p.price * qty)
  carts[ctx.instance] = cart
  ctx:set("carts", carts)
end

local function forget_cart(ctx)
  local carts = carts_of(ctx)
  carts[ctx.instance] = nil
  ctx:set("carts", carts)
end

local function remind(template, discount)
  return function(ctx)
    local cart = carts_of(ctx)[ctx.instance] or { items = j.array {}, value = 0 }
    local payload = {
      template = template, to = ctx.user.traits.email, cart_id = ctx.instance,
      items = cart.items, value = cart.value, currency = "EUR",
    }
    if discount then
      payload.discount_code, payload.discount_percent = discount.code, discount.percent
    end
    ctx:send("email", payload)
  end
end

j.journey "cart_abandonment" {
  key     = "cart_id",
  entry   = j.on("Product Added", add_item),
  goal    = j.on("Order Completed", forget_cart),
  reentry = "never", -- per cart: a cart id is used once

  j.stage "cart" {
    -- another item: record it and re-enter the stage, so the reminders restart from now
    j.on("Product Added", add_item):go "cart",
    -- first match wins: large carts go to the stage that can offer a discount
    j.on("Checkout Started", { value = { gt = LARGE } }):go "checkout_large",
    j.on("Checkout Started"):go "checkout",
    j.after("1h", remind "cart-reminder"),
    j.after("24h", remind "cart-reminder-last"),
    j.after("3d", forget_cart):exit(),
  },

  j.stage "checkout" {
    j.after("1h", remind "checkout-reminder"),
    j.after("24h", remind "checkout-reminder-last"),
    j.after("3d", forget_cart):exit(),
  },

  j.stage "checkout_large" {
    j.after("1h", remind "checkout-reminder"),
    j.after("24h", remind("checkout-discount", { code = "CART10", percent = 10 })),
    j.after("3d", forget_cart):exit(),
  },
}
