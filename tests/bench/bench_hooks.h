/* bench_hooks.h: the hook functions of tests/bench/bench.lua (defined in
 * bench_hooks.lua), numbered. gen.c writes one of these per Lua-reaching event into
 * its plan file; floor.c reads the plan and calls the function of that name. */
#ifndef BENCH_HOOKS_H
#define BENCH_HOOKS_H

#include <stdint.h>

enum {
    HK_NONE,
    HK_WELCOME,             /* trial_onboarding/signed_up enter */
    HK_FIRST_PROJECT_NUDGE, /* trial_onboarding/signed_up after 2d */
    HK_STALLED,             /* trial_onboarding/signed_up after 5d -> dormant */
    HK_ACTIVATED,           /* trial_onboarding/activated enter */
    HK_TEAMMATE_INVITED,    /* trial_onboarding/activated on Teammate Invited */
    HK_UPGRADE_OFFER,       /* trial_onboarding/activated after 7d */
    HK_LEAD_CREATED,        /* lead_scoring/lead enter */
    HK_LEAD_CONTENT,        /* lead_scoring/lead on Whitepaper Downloaded */
    HK_SQL_HANDOFF,         /* lead_scoring/sales_qualified enter */
    HK_CART_OPENED,         /* cart/open enter */
    HK_CART_ITEM_ADDED,     /* cart/open on Product Added */
    HK_CART_REMINDER,       /* cart/open after 1h */
    HK_CART_LAST_CALL,      /* cart/open after 24h -> abandoned */
    HK_CART_ABANDONED,      /* cart/abandoned enter */
    HK_ORDER_COMPLETED,     /* cart goal */
    HK_PRICING_VIEWED,      /* rule */
    HK_PREMIUM_INTEREST,    /* rule */
    HK_BIG_TICKET_VIEW,     /* rule */
    HK_N
};

static const char *const bench_hook_names[HK_N] = {
    "none",           "welcome",          "first_project_nudge", "stalled",
    "activated",      "teammate_invited", "upgrade_offer",       "lead_created",
    "lead_content",   "sql_handoff",      "cart_opened",         "cart_item_added",
    "cart_reminder",  "cart_last_call",   "cart_abandoned",      "order_completed",
    "pricing_viewed", "premium_interest", "big_ticket_view",
};

/* One plan record per Lua call the engine makes, as gen.c's model predicts them: one per
 * event that reaches Lua, and one per hook a firing timer runs (flagged). */
#define BENCH_PLAN_TIMER 0x8000u /* or'ed into hook: called by a timer, not an event */
typedef struct bench_plan_rec {
    uint32_t user; /* user index: userId is "u%07u" */
    uint16_t hook; /* HK_*, with BENCH_PLAN_TIMER for a timer's call */
    uint16_t arg;  /* hook-specific small number (cart ordinal, price, ...) */
} bench_plan_rec;

#endif
