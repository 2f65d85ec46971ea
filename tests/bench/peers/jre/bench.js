// bench.js: the json-rules-engine peer of `make bench` (tests/bench/table.sh).
//
//   node bench.js EVENTS.jsonl [MAX_EVENTS] [CHUNK]
//
// The triggers of tests/bench/bench.lua (journey entries, goals, exits, stage
// transitions, the three rules, with their `where` conditions) are json-rules-engine
// rules; every event is handed to Engine.run with the event and the person's journey
// state as facts. What json-rules-engine has no notion of is done here in plain
// JavaScript, the same as redis_journey.lua does it: the state (which stage, per cart
// for the cart journey), event-time timers (a binary heap by due time, fired before each
// event as its time advances), dedupe by messageId, the profile, and the hooks of
// bench_hooks.lua (actions are counted and kept as objects). Events are read and parsed
// before the clock starts. Latency: the time to process a chunk of CHUNK (500) events,
// one Engine.run after another. Prints "jre: key value" lines.
'use strict';
const fs = require('fs');
const { Engine } = require('json-rules-engine');

const [, , path, maxArg, chunkArg] = process.argv;
const MAX = Number(maxArg || 0);
const CHUNK = Number(chunkArg || 500);
const DAY = 86400000, HOUR = 3600000;

// ------------------------------------------------------------ rules
const ACTIVE = ['signed_up', 'activated', 'dormant'];
const is = (fact, value) => ({ fact, operator: 'equal', value });
const prop = (path, operator, value) => ({ fact: 'properties', path: '$.' + path, operator, value });
const track = (name) => [is('type', 'track'), is('event', name)];
const rule = (name, priority, conds) => ({ name, priority, conditions: { all: conds }, event: { type: name } });

const rules = [
  // trial_onboarding: exit, goal, then the stage's transitions, then the entry
  rule('trial.exit', 100, [...track('Account Deleted'), { fact: 'trial', operator: 'in', value: ACTIVE }]),
  rule('trial.goal', 99, [...track('Subscription Started'), { fact: 'trial', operator: 'in', value: ACTIVE }]),
  rule('trial.signed_up.project', 98, [...track('Project Created'), is('trial', 'signed_up')]),
  rule('trial.activated.teammate', 97, [...track('Teammate Invited'), is('trial', 'activated')]),
  rule('trial.dormant.project', 96, [...track('Project Created'), is('trial', 'dormant')]),
  rule('trial.entry', 95, [...track('Signed Up'), prop('plan', 'equal', 'trial'), is('trial', '')]),
  // lead_scoring
  rule('lead.exit', 90, [...track('Account Deleted'), { fact: 'lead', operator: 'in', value: ['lead', 'sales_qualified'] }]),
  rule('lead.lead.whitepaper', 89, [...track('Whitepaper Downloaded'), is('lead', 'lead')]),
  rule('lead.lead.demo', 88, [...track('Demo Requested'), is('lead', 'lead')]),
  rule('lead.entry', 87, [
    is('type', 'identify'),
    { fact: 'traits', path: '$.role', operator: 'in', value: ['founder', 'cto', 'vp_engineering', 'head_of_product'] },
    { fact: 'traits', path: '$.company_size', operator: 'greaterThanInclusive', value: 50 },
    is('lead', ''),
  ]),
  // cart, keyed by cart_id: the `cart` fact is this cart's stage
  rule('cart.exit', 80, [...track('Cart Cleared'), { fact: 'cart', operator: 'in', value: ['open', 'abandoned'] }]),
  rule('cart.goal', 79, [...track('Order Completed'), { fact: 'cart', operator: 'in', value: ['open', 'abandoned'] }]),
  rule('cart.open.added', 78, [...track('Product Added'), is('cart', 'open')]),
  rule('cart.entry', 77, [
    ...track('Product Added'), prop('price', 'greaterThan', 0), prop('quantity', 'greaterThanInclusive', 1),
    is('cart', ''),
  ]),
  // rules outside journeys
  rule('pricing_viewed', 10, track('Pricing Viewed')),
  rule('premium_interest', 9, [
    ...track('Feature Used'), prop('feature', 'in', ['export', 'api', 'sso', 'audit_log']), is('userPlan', 'trial'),
  ]),
  rule('big_ticket_view', 8, [...track('Product Viewed'), prop('price', 'greaterThanInclusive', 500)]),
];
const engine = new Engine(rules, { allowUndefinedFacts: true });

// ------------------------------------------------------------ state, timers, hooks
const users = new Map(); // id -> { traits, score, segments, trial, tg, lead, lg, carts: Map(cart -> {st, g}) }
const seen = new Set();
const outbox = [];
let actions = 0, clock = 0, timerSeq = 0;
const heap = []; // [due, seq, fn]

function user(id) {
  let u = users.get(id);
  if (!u) {
    u = { traits: {}, score: 0, segments: new Set(), trial: '', tg: 0, lead: '', lg: 0, carts: new Map() };
    users.set(id, u);
  }
  return u;
}
function send(id, journey, stage, channel, payload, at) {
  actions++;
  outbox.push({ time: at, user: id, journey, stage, channel, payload });
}
const before = (a, b) => a[0] < b[0] || (a[0] === b[0] && a[1] < b[1]);
function schedule(due, fn) {
  const h = heap;
  h.push([due, ++timerSeq, fn]);
  for (let i = h.length - 1; i > 0;) {
    const p = (i - 1) >> 1;
    if (!before(h[i], h[p])) break;
    [h[i], h[p]] = [h[p], h[i]];
    i = p;
  }
}
function popTimer() {
  const h = heap, top = h[0], last = h.pop();
  if (h.length) {
    h[0] = last;
    for (let i = 0; ;) {
      const l = 2 * i + 1, r = l + 1;
      let m = i;
      if (l < h.length && before(h[l], h[m])) m = l;
      if (r < h.length && before(h[r], h[m])) m = r;
      if (m === i) break;
      [h[i], h[m]] = [h[m], h[i]];
      i = m;
    }
  }
  return top;
}

const T = 'trial_onboarding', L = 'lead_scoring', C = 'cart';
function enterTrial(id, u, stage, at) {
  const g = ++u.tg;
  u.trial = stage;
  const live = () => u.trial === stage && u.tg === g;
  if (stage === 'signed_up') {
    schedule(at + 2 * DAY, (due) => live() && send(id, T, stage, 'email', { template: 'first-project', to: u.traits.email }, due));
    schedule(at + 5 * DAY, (due) => {
      if (!live()) return;
      send(id, T, stage, 'team', { text: 'trial stalled: ' + id }, due);
      u.segments.add('at-risk');
      enterTrial(id, u, 'dormant', due);
    });
    send(id, T, stage, 'email', { template: 'welcome', to: u.traits.email }, at);
  } else if (stage === 'activated') {
    schedule(at + 7 * DAY, (due) => live() && send(id, T, stage, 'email', { template: 'upgrade-offer', to: u.traits.email }, due));
    u.segments.delete('at-risk');
    send(id, T, stage, 'crm', { user: id, lifecycle: 'activated' }, at);
  } else {
    schedule(at + 9 * DAY, () => { if (live()) u.trial = 'left'; });
  }
}
function enterLead(id, u, stage, at) {
  const g = ++u.lg;
  u.lead = stage;
  const live = () => u.lead === stage && u.lg === g;
  if (stage === 'lead') {
    schedule(at + 30 * DAY, () => { if (live()) u.lead = 'left'; });
    u.score += 20;
    send(id, L, stage, 'crm', { user: id, lifecycle: 'lead', company_size: u.traits.company_size }, at);
  } else {
    schedule(at + 14 * DAY, () => { if (live()) u.lead = 'left'; });
    send(id, L, stage, 'team', { text: 'new SQL: ' + id + ' at ' + String(u.traits.company) }, at);
    send(id, L, stage, 'crm', { user: id, lifecycle: 'sql' }, at);
    u.segments.add('sql');
  }
}
function enterCart(id, u, cart, c, stage, at) {
  const g = ++c.g;
  c.st = stage;
  const live = () => c.st === stage && c.g === g;
  if (stage === 'open') {
    schedule(at + HOUR, (due) => live() && send(id, C, stage, 'email', { template: 'cart-reminder', to: u.traits.email, cart }, due));
    schedule(at + 24 * HOUR, (due) => {
      if (!live()) return;
      send(id, C, stage, 'email', { template: 'cart-last-call', to: u.traits.email, cart }, due);
      enterCart(id, u, cart, c, 'abandoned', due);
    });
    u.traits.last_cart = cart;
  } else {
    schedule(at + 7 * DAY, () => { if (live()) c.st = 'left'; });
    u.segments.add('cart-abandoner');
  }
}

// ------------------------------------------------------------ one event
async function processEvent(e) {
  if (seen.has(e.messageId)) return;
  seen.add(e.messageId);
  const ts = Date.parse(e.timestamp);
  if (ts > clock) clock = ts;
  while (heap.length && heap[0][0] <= clock) {
    const [due, , fn] = popTimer();
    fn(due);
  }
  const id = e.userId || e.anonymousId;
  const u = user(id);
  const type = e.type || (e.event ? 'track' : '');
  if (type === 'identify') Object.assign(u.traits, e.traits);
  const cartId = e.properties && e.properties.cart_id;
  let cart = cartId !== undefined ? u.carts.get(cartId) : undefined;
  const facts = {
    type, event: e.event || '', properties: e.properties || {}, traits: e.traits || {},
    trial: u.trial, lead: u.lead, cart: cart ? cart.st : (cartId !== undefined ? '' : 'none'),
    userPlan: u.traits.plan,
  };
  const { events } = await engine.run(facts);
  if (!events.length) return;
  const fired = new Set(events.map((x) => x.type));
  // one trigger per journey, in the engine's order: exit, goal, stage transitions, entry
  if (fired.has('trial.exit') || fired.has('trial.goal')) u.trial = 'left';
  else if (fired.has('trial.signed_up.project') || fired.has('trial.dormant.project')) enterTrial(id, u, 'activated', ts);
  else if (fired.has('trial.activated.teammate')) u.score += 10;
  else if (fired.has('trial.entry')) enterTrial(id, u, 'signed_up', ts);
  if (fired.has('lead.exit')) u.lead = 'left';
  else if (fired.has('lead.lead.whitepaper')) {
    u.score += 15;
    if (u.score >= 50) u.segments.add('hot-lead');
  } else if (fired.has('lead.lead.demo')) enterLead(id, u, 'sales_qualified', ts);
  else if (fired.has('lead.entry')) enterLead(id, u, 'lead', ts);
  if (fired.has('cart.exit')) cart.st = 'left';
  else if (fired.has('cart.goal')) {
    u.segments.delete('cart-abandoner');
    send(id, C, cart.st, 'crm', { user: id, event: 'order', cart: cartId, revenue: e.properties.revenue }, ts);
    cart.st = 'left';
  } else if (fired.has('cart.open.added')) u.score += 1;
  else if (fired.has('cart.entry')) {
    cart = { st: '', g: 0 };
    u.carts.set(cartId, cart);
    enterCart(id, u, cartId, cart, 'open', ts);
  }
  if (fired.has('pricing_viewed')) u.score += 5;
  if (fired.has('premium_interest')) {
    u.score += 3;
    u.segments.add('wants-' + e.properties.feature);
  }
  if (fired.has('big_ticket_view')) send(id, null, null, 'crm', { user: id, product: e.properties.product_id, price: e.properties.price }, ts);
}

async function main() {
  const lines = fs.readFileSync(path, 'utf8').split('\n');
  const evs = [];
  for (const l of lines) {
    if (!l) continue;
    evs.push(JSON.parse(l));
    if (MAX && evs.length >= MAX) break;
  }
  const lat = [];
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < evs.length; i += CHUNK) {
    const s = process.hrtime.bigint();
    const end = Math.min(i + CHUNK, evs.length);
    for (let k = i; k < end; k++) await processEvent(evs[k]);
    lat.push(Number(process.hrtime.bigint() - s) / 1e6);
  }
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  lat.sort((a, b) => a - b);
  const q = (p) => lat[Math.max(0, Math.ceil(p * lat.length) - 1)];
  const out = [
    ['events', evs.length], ['seconds', secs.toFixed(3)], ['events_per_s', (evs.length / secs).toFixed(0)],
    ['actions', actions], ['p50_ms', q(0.5).toFixed(2)], ['p99_ms', q(0.99).toFixed(2)],
  ];
  for (const [k, v] of out) console.log(`jre: ${k} ${v}`);
  if (process.env.JRE_OUTBOX) fs.writeFileSync(process.env.JRE_OUTBOX, outbox.map((a) => JSON.stringify(a)).join('\n') + '\n');
}
main().catch((err) => {
  console.error(err);
  process.exit(1);
});
