/* gen: writes a deterministic stream of Segment-spec events as JSON Lines for the
 * benchmark (tests/bench/run.sh), for tests/bench/bench.lua.
 *
 *   gen [-n EVENTS] [-u USERS] [-s SEED] [-d DAYS] [-p PLAN.bin] > events.jsonl
 *
 * Defaults: 1,000,000 events, 100,000 users, 14 days from 2026-03-02T00:00:00Z, a
 * fixed seed: the same arguments always give the same bytes. Timestamps increase
 * (Poisson arrivals: exponential gaps; a few page views arrive up to 5 s late), every
 * messageId is unique.
 *
 * Users act in sessions (about 5 events, about a minute apart; 48 sessions run at
 * once). They arrive over the first 70% of the stream: an anonymous page view (half
 * of them), an identify with traits (and the anonymousId), then "Signed Up". After that
 * each event is drawn from a mix that depends a little on where the user stands
 * (open cart, trial stage, lead): page views and other events no trigger names (about
 * half of everything), events whose name matches a trigger but whose C predicates or
 * state keep them out of Lua, and events that run a hook (about 30%).
 *
 * gen models bench.lua's journeys (stages, timers, keys, re-entry) per user, so it
 * knows which events should reach Lua and which timers fire. With -p it writes one
 * bench_plan_rec per Lua call those make (floor.c replays them without the engine); its prediction is printed
 * on stderr, one "gen: key value" per line, to compare with what the engine counts;
 * -v adds a breakdown by kind of event. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_hooks.h"

#define MS_H (3600LL * 1000)
#define MS_D (24 * MS_H)

/* ---------------------------------------------------------------- random */

static uint64_t rng_s[4];

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t mix64(uint64_t z) /* a bijection: distinct inputs, distinct outputs */
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rnd(void) /* xoshiro256** */
{
    uint64_t r = rotl(rng_s[1] * 5, 7) * 9, t = rng_s[1] << 17;
    rng_s[2] ^= rng_s[0];
    rng_s[3] ^= rng_s[1];
    rng_s[1] ^= rng_s[2];
    rng_s[0] ^= rng_s[3];
    rng_s[2] ^= t;
    rng_s[3] = rotl(rng_s[3], 45);
    return r;
}

static double rnd01(void)
{
    return (double)(rnd() >> 11) * 0x1.0p-53;
}
static uint32_t rndn(uint32_t n)
{
    return (uint32_t)(rnd01() * n);
}

/* ---------------------------------------------------------------- vocabulary */

static const char *const first_names[] = {"ada",   "grace",    "alan", "edsger",  "barbara", "ken",    "dennis",
                                          "linus", "margaret", "john", "frances", "donald",  "leslie", "radia"};
static const char *const last_names[] = {"lovelace", "hopper",   "turing", "dijkstra", "liskov", "thompson", "ritchie",
                                         "torvalds", "hamilton", "backus", "allen",    "knuth",  "lamport",  "perlman"};
static const char *const roles[] = {"founder",  "cto",     "vp_engineering", "head_of_product", "engineer",
                                    "designer", "analyst", "marketing",      "student",         "engineer",
                                    "engineer", "pm",      "sales",          "support"};
#define NROLES (sizeof roles / sizeof roles[0])
static const char *const companies[] = {"Acme",     "Globex", "Initech", "Umbrella", "Hooli",
                                        "Vandelay", "Stark",  "Wayne",   "Tyrell",   "Cyberdyne"};
static const char *const plans[] = {"trial", "free", "pro"};

typedef struct page {
    const char *name, *path, *title;
} page;
static const page pages[] = {
    {"Home", "/", "Home"},
    {"Docs", "/docs/getting-started", "Getting started"},
    {"Docs", "/docs/journeys/stages", "Stages and timers"},
    {"Docs", "/docs/api/events", "Events API"},
    {"Blog", "/blog/lifecycle-emails", "Lifecycle emails"},
    {"Dashboard", "/app/dashboard", "Dashboard"},
    {"Dashboard", "/app/journeys", "Journeys"},
    {"Settings", "/app/settings/team", "Team settings"},
    {"Changelog", "/changelog", "What's new"},
    {"Integrations", "/integrations/segment", "Segment"},
};
#define NPAGES (sizeof pages / sizeof pages[0])
static const char *const referrers[] = {"", "https://www.google.com/", "https://duckduckgo.com/",
                                        "https://twitter.com/", "https://www.linkedin.com/"};

static const char *const noise_events[] = {"Button Clicked",   "Session Started",  "Search Performed",
                                           "Settings Updated", "Dashboard Viewed", "Notification Opened"};
#define NNOISE (sizeof noise_events / sizeof noise_events[0])
static const char *const buttons[] = {"save", "cancel", "new_journey", "export_csv", "help", "upgrade"};
static const char *const searches[] = {"webhook", "timer", "segment", "retention", "slack alert", "cohort"};

/* bench.lua's premium rule matches the first four */
static const char *const features[] = {"export", "api",       "sso",           "audit_log", "dashboards",
                                       "alerts", "templates", "collaboration", "themes",    "comments"};
#define NFEATURES (sizeof features / sizeof features[0])
static const char *const whitepapers[] = {"state-of-lifecycle-2026", "activation-playbook", "churn-signals"};

/* ---------------------------------------------------------------- users */

enum { TR_NONE, TR_SIGNED_UP, TR_ACTIVATED, TR_DORMANT, TR_LEFT };
enum { LD_NONE, LD_LEAD, LD_SQL, LD_LEFT };
enum { CT_NONE, CT_OPEN, CT_ABANDONED, CT_LEFT };
enum { PH_NEW, PH_ANON, PH_IDENTIFIED, PH_ACTIVE };

typedef struct user {
    uint8_t phase, plan, role, anon;
    uint8_t trial, lead, cart;
    uint8_t trial_timers; /* bits: timers of the current stage entry already fired */
    uint8_t cart_timers;
    uint16_t ncart; /* current cart ordinal */
    uint32_t company_size;
    uint32_t company;
    int64_t trial_at, lead_at, cart_at; /* when the current stage was entered */
} user;

static user *users;
static uint32_t nusers;

/* ---------------------------------------------------------------- prediction */

/* what each event was, for the -v breakdown */
enum {
    EV_PAGE,
    EV_NOISE,
    EV_IDENTIFY,
    EV_PRICING,
    EV_FEATURE,
    EV_PRODUCT_VIEWED,
    EV_PRODUCT_ADDED,
    EV_ORDER,
    EV_CART_CLEARED,
    EV_PROJECT,
    EV_TEAMMATE,
    EV_WHITEPAPER,
    EV_DEMO,
    EV_SUBSCRIPTION,
    EV_DELETED,
    EV_N,
    EV_ARRIVAL_PAGE = EV_N,
    EV_ARRIVAL_IDENTIFY,
    EV_SIGNED_UP,
    EV_LATE_PAGE,
    EV_KINDS
};
static const char *const kind_names[EV_KINDS] = {
    "page",
    "track (other names)",
    "identify (update)",
    "Pricing Viewed",
    "Feature Used",
    "Product Viewed",
    "Product Added",
    "Order Completed",
    "Cart Cleared",
    "Project Created",
    "Teammate Invited",
    "Whitepaper Downloaded",
    "Demo Requested",
    "Subscription Started",
    "Account Deleted",
    "page (anonymous)",
    "identify (first)",
    "Signed Up",
    "page (late)",
};
static int cur_kind;
static uint64_t kind_count[EV_KINDS][3]; /* unmatched, matched without Lua, Lua */

static uint64_t hook_calls[HK_N];  /* predicted Lua calls by hook (events and timers) */
static uint64_t timer_calls;       /* of which from timers */
static uint64_t lua_events;        /* events predicted to reach Lua */
static uint64_t unmatched, no_lua; /* events naming no trigger; naming one but no Lua */
static FILE *plan;

/* A plan record: the floor makes this call (floor.c). */
static void plan_call(uint32_t ui, int hk, uint16_t arg)
{
    if (plan) {
        bench_plan_rec r = {ui, (uint16_t)hk, arg};
        fwrite(&r, sizeof r, 1, plan);
    }
}

static void timer_hook(uint32_t ui, int hk, uint16_t arg)
{
    hook_calls[hk]++;
    timer_calls++;
    plan_call(ui, hk | (int)BENCH_PLAN_TIMER, arg);
}

/* Fires the timers of u (user ui) due at or before t, as the engine does before an
 * event at t. */
static void resolve(uint32_t ui, user *u, int64_t t)
{
    for (;;) {
        if (u->trial == TR_SIGNED_UP) {
            if (!(u->trial_timers & 1) && t >= u->trial_at + 2 * MS_D) {
                u->trial_timers |= 1;
                timer_hook(ui, HK_FIRST_PROJECT_NUDGE, 0);
            }
            if (t >= u->trial_at + 5 * MS_D) {
                timer_hook(ui, HK_STALLED, 0);
                u->trial = TR_DORMANT;
                u->trial_at += 5 * MS_D;
                u->trial_timers = 0;
                continue;
            }
        } else if (u->trial == TR_ACTIVATED) {
            if (!(u->trial_timers & 1) && t >= u->trial_at + 7 * MS_D) {
                u->trial_timers |= 1;
                timer_hook(ui, HK_UPGRADE_OFFER, 0);
            }
        } else if (u->trial == TR_DORMANT && t >= u->trial_at + 9 * MS_D) {
            u->trial = TR_LEFT;
        }
        break;
    }
    if (u->lead == LD_LEAD && t >= u->lead_at + 30 * MS_D)
        u->lead = LD_LEFT;
    else if (u->lead == LD_SQL && t >= u->lead_at + 14 * MS_D)
        u->lead = LD_LEFT;
    for (;;) {
        if (u->cart == CT_OPEN) {
            if (!(u->cart_timers & 1) && t >= u->cart_at + MS_H) {
                u->cart_timers |= 1;
                timer_hook(ui, HK_CART_REMINDER, u->ncart);
            }
            if (t >= u->cart_at + 24 * MS_H) {
                timer_hook(ui, HK_CART_LAST_CALL, u->ncart);
                timer_hook(ui, HK_CART_ABANDONED, u->ncart);
                u->cart = CT_ABANDONED;
                u->cart_at += 24 * MS_H;
                u->cart_timers = 0;
                continue;
            }
        } else if (u->cart == CT_ABANDONED && t >= u->cart_at + 7 * MS_D) {
            u->cart = CT_LEFT;
        }
        break;
    }
}

/* An event's fate: hk > 0 reaches Lua (first hook it runs), 0 names a trigger but
 * stays in C, -1 names none. */
static void outcome(uint32_t ui, int hk, uint16_t arg)
{
    kind_count[cur_kind][hk > 0 ? 2 : hk == 0 ? 1 : 0]++;
    if (hk > 0) {
        lua_events++;
        hook_calls[hk]++;
        plan_call(ui, hk, arg);
    } else if (hk == 0) {
        no_lua++;
    } else {
        unmatched++;
    }
}

/* ---------------------------------------------------------------- output */

static char line[2048];
static size_t len;

static void put(const char *s)
{
    size_t n = strlen(s);
    memcpy(line + len, s, n);
    len += n;
}

static void putf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void putf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    len += (size_t)vsnprintf(line + len, sizeof line - len, fmt, ap);
    va_end(ap);
}

static void format_time(int64_t ms, char out[48])
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    snprintf(out, 48, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

static uint64_t seed;

/* Ends the line: timestamp, messageId (a UUID-shaped bijection of the event number,
 * so unique), a small context on some events. */
static void finish(int64_t ts, uint64_t seq, int with_context)
{
    char t[48];
    format_time(ts, t);
    if (with_context)
        put(",\"context\":{\"library\":{\"name\":\"analytics.js\",\"version\":\"4.1.0\"}}");
    uint64_t a = mix64(seq ^ seed), b = mix64(a + seq);
    putf(",\"timestamp\":\"%s\",\"messageId\":\"%08x-%04x-4%03x-%04x-%012llx\"}\n", t, (unsigned)(a >> 32),
         (unsigned)(a >> 16) & 0xffff, (unsigned)a & 0xfff, (unsigned)(0x8000 | ((b >> 48) & 0x3fff)),
         (unsigned long long)(b & 0xffffffffffffULL));
    fwrite(line, 1, len, stdout);
    len = 0;
}

static void user_id(uint32_t ui, char out[16])
{
    snprintf(out, 16, "u%07u", ui);
}
static void anon_id(uint32_t ui, char out[40])
{
    snprintf(out, 40, "anon-%016llx", (unsigned long long)mix64(ui ^ 0xa5a5a5a5ULL ^ seed));
}

static void track_head(const char *uid, const char *name)
{
    putf("{\"type\":\"track\",\"userId\":\"%s\",\"event\":\"%s\",\"properties\":{", uid, name);
}

static void page_event(const char *idfield, const char *id)
{
    const page *p = &pages[rndn(NPAGES)];
    putf("{\"type\":\"page\",\"%s\":\"%s\",\"name\":\"%s\",\"properties\":{\"path\":\"%s\","
         "\"title\":\"%s\",\"referrer\":\"%s\"}",
         idfield, id, p->name, p->path, p->title, referrers[rndn(5)]);
}

static void identify_event(uint32_t ui, const user *u, const char *uid)
{
    char aid[40];
    putf("{\"type\":\"identify\",\"userId\":\"%s\",", uid);
    if (u->anon) {
        anon_id(ui, aid);
        putf("\"anonymousId\":\"%s\",", aid);
    }
    uint64_t nm = mix64(ui + 7);
    const char *fn = first_names[nm % 14], *ln = last_names[(nm >> 8) % 14];
    putf("\"traits\":{\"email\":\"%s.%s%u@example.com\",\"plan\":\"%s\",\"role\":\"%s\","
         "\"company\":\"%s %u\",\"company_size\":%u}",
         fn, ln, ui, plans[u->plan], roles[u->role], companies[u->company % 10], u->company, u->company_size);
}

static int is_lead(const user *u)
{
    return u->role < 4 && u->company_size >= 50;
}

/* ---------------------------------------------------------------- the mix */

/* weights in 1/10 %, before the state adjustments of pick() */
static const int base_weight[EV_N] = {
    [EV_PAGE] = 440,          [EV_NOISE] = 140,         [EV_IDENTIFY] = 15, [EV_PRICING] = 95,     [EV_FEATURE] = 60,
    [EV_PRODUCT_VIEWED] = 45, [EV_PRODUCT_ADDED] = 110, [EV_ORDER] = 12,    [EV_CART_CLEARED] = 5, [EV_PROJECT] = 15,
    [EV_TEAMMATE] = 10,       [EV_WHITEPAPER] = 12,     [EV_DEMO] = 4,      [EV_SUBSCRIPTION] = 6, [EV_DELETED] = 1,
};

static int pick(const user *u)
{
    int w[EV_N];
    memcpy(w, base_weight, sizeof w);
    if (u->cart == CT_OPEN) {
        w[EV_PRODUCT_ADDED] += 40;
        w[EV_ORDER] += 60;
        w[EV_CART_CLEARED] += 6;
    } else if (u->cart == CT_ABANDONED) {
        w[EV_ORDER] += 20;
    }
    if (u->trial == TR_SIGNED_UP || u->trial == TR_DORMANT)
        w[EV_PROJECT] += 60;
    if (u->trial == TR_ACTIVATED) {
        w[EV_TEAMMATE] += 50;
        w[EV_SUBSCRIPTION] += 8;
    }
    if (u->lead == LD_LEAD) {
        w[EV_WHITEPAPER] += 40;
        w[EV_DEMO] += 15;
    }
    int total = 0;
    for (int i = 0; i < EV_N; i++)
        total += w[i];
    int r = (int)rndn((uint32_t)total);
    for (int i = 0; i < EV_N; i++) {
        if (r < w[i])
            return i;
        r -= w[i];
    }
    return EV_PAGE;
}

static void cart_id(uint32_t ui, const user *u, char out[24])
{
    snprintf(out, 24, "c%07u-%u", ui, u->ncart);
}

/* One event for an active (signed-up) user, drawn by pick(). */
static void active_event(uint32_t ui, user *u, int64_t ts, uint64_t seq)
{
    char uid[16], cid[24];
    user_id(ui, uid);
    int kind = pick(u);
    cur_kind = kind;
    int ctx = 0;
    switch (kind) {
    case EV_PAGE:
        page_event("userId", uid);
        ctx = 0;
        outcome(ui, -1, 0);
        break;
    case EV_NOISE: {
        const char *name = noise_events[rndn(NNOISE)];
        track_head(uid, name);
        if (name[0] == 'B')
            putf("\"button\":\"%s\",\"screen\":\"%s\"}", buttons[rndn(6)], pages[rndn(NPAGES)].path);
        else if (name[0] == 'S' && name[1] == 'e' && name[2] == 'a')
            putf("\"query\":\"%s\",\"results\":%u}", searches[rndn(6)], rndn(40));
        else
            putf("\"source\":\"web\",\"session_id\":\"s%llx\"}", (unsigned long long)(mix64(seq) & 0xffffffffff));
        ctx = 1;
        outcome(ui, -1, 0);
        break;
    }
    case EV_IDENTIFY: /* traits unchanged: the lead entry's C predicates run, nothing enters */
        identify_event(ui, u, uid);
        ctx = 0;
        outcome(ui, 0, 0);
        break;
    case EV_PRICING:
        track_head(uid, "Pricing Viewed");
        putf("\"plan_shown\":\"%s\",\"billing\":\"%s\",\"currency\":\"USD\"}", rndn(2) ? "team" : "pro",
             rndn(3) ? "monthly" : "annual");
        ctx = 0;
        outcome(ui, HK_PRICING_VIEWED, 0);
        break;
    case EV_FEATURE: {
        uint32_t f = rndn(NFEATURES);
        track_head(uid, "Feature Used");
        putf("\"feature\":\"%s\",\"duration_ms\":%u,\"workspace\":\"w%u\"}", features[f], 200 + rndn(20000), ui % 5000);
        ctx = 0;
        outcome(ui, f < 4 && u->plan == 0 ? HK_PREMIUM_INTEREST : 0, (uint16_t)f);
        break;
    }
    case EV_PRODUCT_VIEWED: {
        uint32_t p = rndn(2000);
        double price = p < 200 ? 500 + p * 7.5 : 9.99 + (p % 48) * 10;
        track_head(uid, "Product Viewed");
        putf("\"product_id\":\"p%05u\",\"sku\":\"SKU-%05u\",\"category\":\"%s\",\"price\":%.2f,\"currency\":\"USD\"}",
             p, p, p % 3 ? "templates" : "add-ons", price);
        ctx = 0;
        outcome(ui, price >= 500 ? HK_BIG_TICKET_VIEW : 0, (uint16_t)p);
        break;
    }
    case EV_PRODUCT_ADDED: {
        int hk;
        if (u->cart == CT_ABANDONED && rndn(2))
            u->cart = CT_NONE, u->ncart++; /* starts over with a new cart */
        else if (u->cart == CT_LEFT)
            u->cart = CT_NONE, u->ncart++;
        if (u->cart == CT_NONE) {
            u->cart = CT_OPEN;
            u->cart_at = ts;
            u->cart_timers = 0;
            hk = HK_CART_OPENED;
        } else if (u->cart == CT_OPEN) {
            hk = HK_CART_ITEM_ADDED;
        } else {
            hk = 0; /* abandoned: no Product Added trigger there, the entry sees the instance */
        }
        cart_id(ui, u, cid);
        uint32_t p = rndn(2000);
        track_head(uid, "Product Added");
        putf("\"cart_id\":\"%s\",\"product_id\":\"p%05u\",\"sku\":\"SKU-%05u\",\"price\":%.2f,\"quantity\":%u,"
             "\"currency\":\"USD\"}",
             cid, p, p, 9.99 + (p % 48) * 10, 1 + rndn(3));
        ctx = 0;
        outcome(ui, hk, u->ncart);
        break;
    }
    case EV_ORDER: {
        int hk = 0;
        if (u->cart == CT_OPEN || u->cart == CT_ABANDONED) {
            u->cart = CT_LEFT;
            hk = HK_ORDER_COMPLETED;
        }
        cart_id(ui, u, cid);
        track_head(uid, "Order Completed");
        putf("\"cart_id\":\"%s\",\"order_id\":\"o%07u-%u\",\"revenue\":%.2f,\"currency\":\"USD\"}", cid, ui, u->ncart,
             19.99 + rndn(400));
        ctx = 0;
        outcome(ui, hk, u->ncart);
        break;
    }
    case EV_CART_CLEARED:
        if (u->cart == CT_OPEN || u->cart == CT_ABANDONED)
            u->cart = CT_LEFT;
        cart_id(ui, u, cid);
        track_head(uid, "Cart Cleared");
        putf("\"cart_id\":\"%s\",\"reason\":\"%s\"}", cid, rndn(2) ? "user" : "expired");
        ctx = 0;
        outcome(ui, 0, 0);
        break;
    case EV_PROJECT: {
        int hk = 0;
        if (u->trial == TR_SIGNED_UP || u->trial == TR_DORMANT) {
            u->trial = TR_ACTIVATED;
            u->trial_at = ts;
            u->trial_timers = 0;
            hk = HK_ACTIVATED;
        }
        track_head(uid, "Project Created");
        putf("\"project_id\":\"pr%07u-%u\",\"template\":\"%s\",\"source\":\"onboarding\"}", ui, rndn(9),
             rndn(2) ? "blank" : "trial-nurture");
        ctx = 0;
        outcome(ui, hk, 0);
        break;
    }
    case EV_TEAMMATE:
        track_head(uid, "Teammate Invited");
        putf("\"invitee_email\":\"member%u@example.com\",\"role\":\"%s\"}", rndn(100000), rndn(3) ? "editor" : "admin");
        ctx = 0;
        outcome(ui, u->trial == TR_ACTIVATED ? HK_TEAMMATE_INVITED : 0, 0);
        break;
    case EV_WHITEPAPER:
        track_head(uid, "Whitepaper Downloaded");
        putf("\"title\":\"%s\",\"format\":\"pdf\"}", whitepapers[rndn(3)]);
        ctx = 0;
        outcome(ui, u->lead == LD_LEAD ? HK_LEAD_CONTENT : 0, 0);
        break;
    case EV_DEMO: {
        int hk = 0;
        if (u->lead == LD_LEAD) {
            u->lead = LD_SQL;
            u->lead_at = ts;
            hk = HK_SQL_HANDOFF;
        }
        track_head(uid, "Demo Requested");
        putf("\"team_size\":%u,\"preferred_time\":\"%s\"}", 2 + rndn(200), rndn(2) ? "morning" : "afternoon");
        ctx = 0;
        outcome(ui, hk, 0);
        break;
    }
    case EV_SUBSCRIPTION:
        if (u->trial >= TR_SIGNED_UP && u->trial <= TR_DORMANT)
            u->trial = TR_LEFT;
        track_head(uid, "Subscription Started");
        putf("\"plan\":\"%s\",\"billing\":\"%s\",\"mrr\":%u}", rndn(2) ? "team" : "pro", rndn(3) ? "monthly" : "annual",
             49 + rndn(4) * 50);
        ctx = 0;
        outcome(ui, 0, 0);
        break;
    case EV_DELETED:
        if (u->trial >= TR_SIGNED_UP && u->trial <= TR_DORMANT)
            u->trial = TR_LEFT;
        if (u->lead == LD_LEAD || u->lead == LD_SQL)
            u->lead = LD_LEFT;
        track_head(uid, "Account Deleted");
        putf("\"reason\":\"%s\"}", rndn(2) ? "too_expensive" : "not_needed");
        ctx = 0;
        outcome(ui, 0, 0);
        break;
    }
    finish(ts, seq, ctx);
}

/* The next arrival step of user ui: anonymous page, identify, Signed Up. */
static void arrival_event(uint32_t ui, user *u, int64_t ts, uint64_t seq)
{
    char uid[16], aid[40];
    user_id(ui, uid);
    if (u->phase == PH_NEW && u->anon) {
        anon_id(ui, aid);
        cur_kind = EV_ARRIVAL_PAGE;
        page_event("anonymousId", aid);
        finish(ts, seq, 0);
        outcome(ui, -1, 0);
        u->phase = PH_ANON;
        return;
    }
    if (u->phase == PH_NEW || u->phase == PH_ANON) {
        cur_kind = EV_ARRIVAL_IDENTIFY;
        identify_event(ui, u, uid);
        finish(ts, seq, 0);
        if (is_lead(u)) {
            u->lead = LD_LEAD;
            u->lead_at = ts;
            outcome(ui, HK_LEAD_CREATED, 0);
        } else {
            outcome(ui, 0, 0);
        }
        u->phase = PH_IDENTIFIED;
        return;
    }
    /* Signed Up: the trial journey's entry predicate picks the trials */
    cur_kind = EV_SIGNED_UP;
    track_head(uid, "Signed Up");
    putf("\"plan\":\"%s\",\"method\":\"%s\",\"utm_source\":\"%s\"}", plans[u->plan], rndn(3) ? "email" : "google",
         rndn(2) ? "newsletter" : "search");
    finish(ts, seq, 1);
    if (u->plan == 0) {
        u->trial = TR_SIGNED_UP;
        u->trial_at = ts;
        u->trial_timers = 0;
        outcome(ui, HK_WELCOME, 0);
    } else {
        outcome(ui, 0, 0);
    }
    u->phase = PH_ACTIVE;
}

/* ---------------------------------------------------------------- main */

static unsigned long long arg_num(const char *s, const char *what)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || end == s) {
        fprintf(stderr, "gen: bad %s '%s'\n", what, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    unsigned long long n = 1000000, days = 14;
    nusers = 100000;
    seed = 0x6a6f75726e657964ULL; /* "journeyd" */
    const char *plan_path = NULL;
    int verbose = 0;
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "-n") == 0)
            n = arg_num(argv[++i], "event count");
        else if (i + 1 < argc && strcmp(argv[i], "-u") == 0)
            nusers = (uint32_t)arg_num(argv[++i], "user count");
        else if (i + 1 < argc && strcmp(argv[i], "-s") == 0)
            seed = arg_num(argv[++i], "seed");
        else if (i + 1 < argc && strcmp(argv[i], "-d") == 0)
            days = arg_num(argv[++i], "days");
        else if (strcmp(argv[i], "-v") == 0)
            verbose = 1;
        else if (i + 1 < argc && strcmp(argv[i], "-p") == 0)
            plan_path = argv[++i];
        else {
            fprintf(stderr,
                    "usage: gen [-n EVENTS] [-u USERS] [-s SEED] [-d DAYS] [-p PLAN.bin] [-v] > events.jsonl\n");
            return 2;
        }
    }
    if (!nusers || !n || !days || nusers > 9999999) {
        fprintf(stderr, "gen: need 1..9999999 users, events > 0, days > 0\n");
        return 2;
    }
    if (plan_path && !(plan = fopen(plan_path, "wb"))) {
        fprintf(stderr, "gen: %s: cannot write\n", plan_path);
        return 2;
    }
    uint64_t sm = seed;
    for (int i = 0; i < 4; i++)
        rng_s[i] = splitmix64(&sm);
    users = calloc(nusers, sizeof *users);
    if (!users)
        return 1;
    for (uint32_t i = 0; i < nusers; i++) {
        user *u = &users[i];
        uint32_t r = rndn(100);
        u->plan = r < 65 ? 0 : r < 90 ? 1 : 2;
        u->role = (uint8_t)rndn(NROLES);
        u->anon = rndn(2);
        u->company = rndn(5000);
        double sz = exp(rnd01() * log(5000.0)); /* 1 .. 5000, log-uniform */
        u->company_size = (uint32_t)sz;
    }
    static char outbuf[1 << 20];
    setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);

    const int64_t start = 1772409600000LL; /* 2026-03-02T00:00:00Z */
    const double gap = (double)days * MS_D / (double)n;
    const uint64_t arrive_by = (uint64_t)(0.7 * (double)n); /* all users arrive in the first 70% */
    /* Users act in sessions: SESSIONS of them are mid-session at any time, and each
     * event comes from one of those; a finished session is replaced by a new one (an
     * arriving user, or a returning one). Events of one session are about a minute
     * apart. */
    enum { SESSIONS = 48 };
    uint32_t sess[SESSIONS], left[SESSIONS], nsess = 0;
    uint32_t *active = malloc(nusers * sizeof *active);
    if (!active)
        return 1;
    uint32_t nactive = 0, arrived = 0;
    double clock = (double)start;
    int64_t last = start;
    for (uint64_t seq = 0; seq < n; seq++) {
        clock += -log(1.0 - rnd01()) * gap;
        int64_t ts = (int64_t)clock;
        if (ts < last)
            ts = last;
        last = ts;
        while (nsess < SESSIONS) { /* start sessions */
            double p_new = 0;
            if (arrived < nusers)
                p_new = seq >= arrive_by ? 1.0 : 5.5 * 1.2 * (double)(nusers - arrived) / (double)(arrive_by - seq);
            uint32_t ui;
            if (arrived < nusers && (!nactive || rnd01() < p_new))
                ui = arrived++;
            else
                ui = active[rndn(nactive)];
            int busy = 0;
            for (uint32_t k = 0; k < nsess; k++)
                busy |= sess[k] == ui;
            if (busy)
                continue;
            sess[nsess] = ui;
            /* geometric, mean 5; an arrival also has its sign-up steps */
            left[nsess] = 1 + (uint32_t)(-log(1.0 - rnd01()) * 4.5);
            if (users[ui].phase != PH_ACTIVE)
                left[nsess] += 2 + users[ui].anon;
            nsess++;
        }
        uint32_t k = rndn(nsess), ui = sess[k];
        if (--left[k] == 0)
            sess[k] = sess[--nsess], left[k] = left[nsess];
        user *u = &users[ui];
        resolve(ui, u, ts);
        if (u->phase != PH_ACTIVE) {
            arrival_event(ui, u, ts, seq);
            if (u->phase == PH_ACTIVE)
                active[nactive++] = ui;
            continue;
        }
        /* a few page views arrive late, by up to 5 s (after other events) */
        if (rndn(1000) < 3) {
            char uid[16];
            user_id(ui, uid);
            cur_kind = EV_LATE_PAGE;
            page_event("userId", uid);
            finish(ts - (int64_t)rndn(5000), seq, 0);
            outcome(ui, -1, 0);
            continue;
        }
        active_event(ui, u, ts, seq);
    }
    fflush(stdout);
    /* timers the engine fires up to the last event's time */
    for (uint32_t i = 0; i < arrived; i++)
        resolve(i, &users[i], last);
    if (plan)
        fclose(plan);

    uint64_t calls = 0;
    for (int i = 1; i < HK_N; i++)
        calls += hook_calls[i];
    fprintf(stderr, "gen: events %llu\n", n);
    fprintf(stderr, "gen: users %u\n", arrived);
    fprintf(stderr, "gen: lua_events %llu\n", (unsigned long long)lua_events);
    fprintf(stderr, "gen: matched_no_lua %llu\n", (unsigned long long)no_lua);
    fprintf(stderr, "gen: unmatched %llu\n", (unsigned long long)unmatched);
    fprintf(stderr, "gen: lua_calls %llu\n", (unsigned long long)calls);
    fprintf(stderr, "gen: timer_lua_calls %llu\n", (unsigned long long)timer_calls);
    for (int i = 1; i < HK_N; i++)
        fprintf(stderr, "gen: hook %s %llu\n", bench_hook_names[i], (unsigned long long)hook_calls[i]);
    if (verbose) {
        fprintf(stderr, "gen: %-24s %9s %9s %9s %7s\n", "kind", "unmatched", "C only", "Lua", "share");
        for (int i = 0; i < EV_KINDS; i++) {
            uint64_t *c = kind_count[i];
            fprintf(stderr, "gen: %-24s %9llu %9llu %9llu %6.2f%%\n", kind_names[i], (unsigned long long)c[0],
                    (unsigned long long)c[1], (unsigned long long)c[2],
                    100.0 * (double)(c[0] + c[1] + c[2]) / (double)n);
        }
    }
    return ferror(stdout) ? 1 : 0;
}
