#define _POSIX_C_SOURCE 200809L
#include "window.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "clock.h"

#define DAY_MS 86400000LL
#define MAX_TZIF (1 << 20)

/* ---------------------------------------------------------------- civil dates */

static int64_t floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && ((a < 0) != (b < 0)));
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = floor_div(y, 400);
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int64_t year_of_days(int64_t z)
{
    z += 719468;
    int64_t era = floor_div(z, 146097);
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int m = (int)(mp < 10 ? mp + 3 : mp - 9);
    return yoe + era * 400 + (m <= 2);
}

static int is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Monday = 0 ... Sunday = 6 (1970-01-01 was a Thursday). */
static int weekday(int64_t days)
{
    return (int)(((days + 3) % 7 + 7) % 7);
}

/* ---------------------------------------------------------------- TZif */

typedef struct tz_rule {
    char kind; /* 'M', 'J' (1..365, no Feb 29) or 'N' (0..365) */
    int m, w, d, n;
    int32_t time; /* seconds after local midnight */
} tz_rule;

struct jd_tz {
    char name[64];
    int64_t *trans; /* transition times, ascending */
    uint8_t *idx;   /* type after each transition */
    size_t ntrans;
    int32_t *off; /* UTC offset per type */
    size_t ntypes;
    /* the footer: rules for times after the last transition */
    int has_footer, has_dst;
    int32_t std_off, dst_off;
    tz_rule start, end;
};

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const unsigned char *p)
{
    return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

/* POSIX TZ pieces: a zone abbreviation, an offset "[+-]hh[:mm[:ss]]", a rule. */
static const char *tzs_name(const char *s)
{
    if (*s == '<') {
        while (*s && *s != '>')
            s++;
        return *s ? s + 1 : NULL;
    }
    const char *b = s;
    while ((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z'))
        s++;
    return s - b >= 3 ? s : NULL;
}

static const char *tzs_hms(const char *s, int32_t *out, int maxh)
{
    int sign = 1;
    if (*s == '+' || *s == '-')
        sign = *s++ == '-' ? -1 : 1;
    if (*s < '0' || *s > '9')
        return NULL;
    int32_t v[3] = {0, 0, 0};
    for (int k = 0; k < 3; k++) {
        if (k && *s != ':')
            break;
        if (k)
            s++;
        int digits = 0;
        while (*s >= '0' && *s <= '9' && digits < 3) {
            v[k] = v[k] * 10 + (*s++ - '0');
            digits++;
        }
        if (!digits)
            return NULL;
    }
    if (v[0] > maxh || v[1] > 59 || v[2] > 59)
        return NULL;
    *out = sign * (v[0] * 3600 + v[1] * 60 + v[2]);
    return s;
}

static const char *tzs_num(const char *s, int *out, int lo, int hi)
{
    if (*s < '0' || *s > '9')
        return NULL;
    int v = 0;
    while (*s >= '0' && *s <= '9' && v <= hi)
        v = v * 10 + (*s++ - '0');
    if (v < lo || v > hi)
        return NULL;
    *out = v;
    return s;
}

static const char *tzs_rule(const char *s, tz_rule *r)
{
    memset(r, 0, sizeof *r);
    r->time = 7200;
    if (*s == 'M') {
        r->kind = 'M';
        if (!(s = tzs_num(s + 1, &r->m, 1, 12)) || *s != '.' || !(s = tzs_num(s + 1, &r->w, 1, 5)) || *s != '.' ||
            !(s = tzs_num(s + 1, &r->d, 0, 6)))
            return NULL;
    } else if (*s == 'J') {
        r->kind = 'J';
        if (!(s = tzs_num(s + 1, &r->n, 1, 365)))
            return NULL;
    } else {
        r->kind = 'N';
        if (!(s = tzs_num(s, &r->n, 0, 365)))
            return NULL;
    }
    if (*s == '/' && !(s = tzs_hms(s + 1, &r->time, 167)))
        return NULL;
    return s;
}

static int parse_footer(jd_tz *z, const char *s)
{
    int32_t v;
    if (!(s = tzs_name(s)) || !(s = tzs_hms(s, &v, 24)))
        return -1;
    z->std_off = -v;
    if (!*s) {
        z->has_footer = 1;
        return 0;
    }
    if (!(s = tzs_name(s)))
        return -1;
    z->dst_off = z->std_off + 3600;
    if (*s && *s != ',') {
        if (!(s = tzs_hms(s, &v, 24)))
            return -1;
        z->dst_off = -v;
    }
    if (!*s) { /* no rules: the US rules of the POSIX default */
        z->start = (tz_rule){.kind = 'M', .m = 3, .w = 2, .d = 0, .time = 7200};
        z->end = (tz_rule){.kind = 'M', .m = 11, .w = 1, .d = 0, .time = 7200};
    } else if (*s != ',' || !(s = tzs_rule(s + 1, &z->start)) || *s != ',' || !(s = tzs_rule(s + 1, &z->end)) || *s) {
        return -1;
    }
    z->has_footer = z->has_dst = 1;
    return 0;
}

/* The UTC second a rule takes effect in year y, its local time read with offset off. */
static int64_t rule_time(const tz_rule *r, int64_t y, int32_t off)
{
    int64_t day;
    if (r->kind == 'J')
        day = days_from_civil(y, 1, 1) + r->n - 1 + (is_leap(y) && r->n >= 60);
    else if (r->kind == 'N')
        day = days_from_civil(y, 1, 1) + r->n;
    else {
        static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
        int64_t first = days_from_civil(y, r->m, 1);
        int wd_sun = (weekday(first) + 1) % 7; /* POSIX counts from Sunday */
        int dom = 1 + (r->d - wd_sun + 7) % 7 + (r->w - 1) * 7;
        int len = mdays[r->m - 1] + (r->m == 2 && is_leap(y));
        while (dom > len)
            dom -= 7;
        day = first + dom - 1;
    }
    return day * 86400 + r->time - off;
}

static int footer_is_dst(const jd_tz *z, int64_t t)
{
    int64_t y = year_of_days(floor_div(t + z->std_off, 86400));
    int64_t s = rule_time(&z->start, y, z->std_off), e = rule_time(&z->end, y, z->dst_off);
    return s < e ? (t >= s && t < e) : !(t >= e && t < s);
}

static int parse_tzif(jd_tz *z, const unsigned char *p, size_t n)
{
    if (n < 44 || memcmp(p, "TZif", 4) != 0)
        return -1;
    int version = p[4];
    size_t tsize = 4;
    uint32_t c[6];
    for (int i = 0; i < 6; i++)
        c[i] = be32(p + 20 + 4 * i);
    size_t pos = 44;
    if (version >= '2') { /* skip the 32-bit block, read the 64-bit one */
        size_t v1 = (size_t)c[3] * 5 + (size_t)c[4] * 6 + c[5] + (size_t)c[2] * 8 + c[1] + c[0];
        if (v1 > n || pos + v1 + 44 > n || memcmp(p + pos + v1, "TZif", 4) != 0)
            return -1;
        pos += v1;
        for (int i = 0; i < 6; i++)
            c[i] = be32(p + pos + 20 + 4 * i);
        pos += 44;
        tsize = 8;
    }
    uint32_t isut = c[0], isstd = c[1], leap = c[2], timecnt = c[3], typecnt = c[4], charcnt = c[5];
    if (typecnt == 0 || typecnt > 256 || timecnt > 100000)
        return -1;
    size_t need =
        (size_t)timecnt * (tsize + 1) + (size_t)typecnt * 6 + charcnt + (size_t)leap * (tsize + 4) + isstd + isut;
    if (need > n - pos)
        return -1;
    z->ntrans = timecnt;
    z->ntypes = typecnt;
    z->trans = jd_xcalloc(timecnt ? timecnt : 1, sizeof *z->trans);
    z->idx = jd_xcalloc(timecnt ? timecnt : 1, 1);
    z->off = jd_xcalloc(typecnt, sizeof *z->off);
    for (uint32_t i = 0; i < timecnt; i++) {
        const unsigned char *q = p + pos + i * tsize;
        z->trans[i] = tsize == 8 ? be64(q) : (int64_t)(int32_t)be32(q);
        if (i && z->trans[i] <= z->trans[i - 1])
            return -1;
    }
    pos += (size_t)timecnt * tsize;
    for (uint32_t i = 0; i < timecnt; i++) {
        z->idx[i] = p[pos + i];
        if (z->idx[i] >= typecnt)
            return -1;
    }
    pos += timecnt;
    for (uint32_t i = 0; i < typecnt; i++)
        z->off[i] = (int32_t)be32(p + pos + 6 * i);
    pos += (size_t)typecnt * 6 + charcnt + (size_t)leap * (tsize + 4) + isstd + isut;
    if (tsize == 8 && pos < n && p[pos] == '\n') {
        const char *f = (const char *)p + pos + 1;
        const char *nl = memchr(f, '\n', n - pos - 1);
        if (nl && nl > f && nl - f < 128) {
            char foot[128];
            memcpy(foot, f, (size_t)(nl - f));
            foot[nl - f] = '\0';
            if (parse_footer(z, foot)) /* a footer we cannot read: the table alone */
                z->has_footer = z->has_dst = 0;
        }
    }
    return 0;
}

static int valid_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n >= sizeof((jd_tz *)0)->name || name[0] == '/')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '/' ||
              ch == '_' || ch == '-' || ch == '+' || ch == '.'))
            return 0;
        if (ch == '.' && (i == 0 || name[i - 1] == '/')) /* no "..", no hidden files */
            return 0;
    }
    return 1;
}

jd_tz *jd_tz_load(const char *name)
{
    if (!valid_name(name))
        return NULL;
    const char *dir = getenv("TZDIR");
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir && *dir ? dir : "/usr/share/zoneinfo", name);
    jd_tz *z = jd_xcalloc(1, sizeof *z);
    snprintf(z->name, sizeof z->name, "%s", name);
    FILE *f = fopen(path, "rb");
    unsigned char *data = NULL;
    size_t n = 0;
    int ok = 0;
    if (f) {
        data = jd_xmalloc(MAX_TZIF);
        n = fread(data, 1, MAX_TZIF, f);
        fclose(f);
        ok = n < MAX_TZIF && parse_tzif(z, data, n) == 0;
        free(data);
    }
    if (!ok && !f && (strcmp(name, "UTC") == 0 || strcmp(name, "Etc/UTC") == 0)) {
        jd_tz_free(z); /* no tzdata installed: UTC needs no file */
        z = jd_xcalloc(1, sizeof *z);
        snprintf(z->name, sizeof z->name, "%s", name);
        z->off = jd_xcalloc(1, sizeof *z->off);
        z->ntypes = 1;
        ok = 1;
    }
    if (!ok) {
        jd_tz_free(z);
        return NULL;
    }
    return z;
}

void jd_tz_free(jd_tz *z)
{
    if (!z)
        return;
    free(z->trans);
    free(z->idx);
    free(z->off);
    free(z);
}

const char *jd_tz_name(const jd_tz *z)
{
    return z->name;
}

/* The transition at or before t: trans[i] <= t < trans[i + 1] (needs trans[0] <= t <
 * trans[ntrans - 1]). */
static size_t bracket(const jd_tz *z, int64_t t)
{
    size_t lo = 0, hi = z->ntrans - 1;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (z->trans[mid] <= t)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

int32_t jd_tz_offset(const jd_tz *z, int64_t t)
{
    if (z->ntrans == 0 || t >= z->trans[z->ntrans - 1]) {
        if (z->has_footer)
            return z->has_dst && footer_is_dst(z, t) ? z->dst_off : z->std_off;
        return z->ntrans ? z->off[z->idx[z->ntrans - 1]] : z->off[0];
    }
    if (t < z->trans[0])
        return z->off[0];
    return z->off[z->idx[bracket(z, t)]];
}

int64_t jd_tz_next_change(const jd_tz *z, int64_t t)
{
    if (z->ntrans && t < z->trans[z->ntrans - 1]) {
        if (z->trans[0] > t)
            return z->trans[0];
        return z->trans[bracket(z, t) + 1]; /* the first transition > t */
    }
    if (!z->has_dst)
        return INT64_MAX;
    int64_t y = year_of_days(floor_div(t + z->std_off, 86400)), best = INT64_MAX;
    for (int64_t k = y; k <= y + 1; k++) {
        int64_t s = rule_time(&z->start, k, z->std_off), e = rule_time(&z->end, k, z->dst_off);
        if (s > t && s < best)
            best = s;
        if (e > t && e < best)
            best = e;
    }
    return best;
}

/* ---------------------------------------------------------------- zone cache */

const jd_tz *jd_tzcache_get(jd_tzcache **cp, const char *name, size_t n)
{
    if (!*cp)
        *cp = jd_xcalloc(1, sizeof **cp);
    jd_tzcache *c = *cp;
    void *v = jd_map_get(&c->zones, name, n);
    if (!v) {
        char buf[64];
        jd_tz *z = NULL;
        if (n < sizeof buf && !memchr(name, '\0', n)) {
            memcpy(buf, name, n);
            buf[n] = '\0';
            z = jd_tz_load(buf);
        }
        v = z ? (void *)z : (void *)c;
        if (z || c->zones.count < 4096) /* unknown names from traits: remembered, boundedly */
            jd_map_put(&c->zones, name, n, v);
    }
    return v == (void *)c ? NULL : v;
}

int jd_tzcache_first_warning(jd_tzcache **cp, const char *name, size_t n)
{
    if (!*cp)
        *cp = jd_xcalloc(1, sizeof **cp);
    jd_tzcache *c = *cp;
    if (jd_map_get(&c->warned, name, n) || c->warned.count >= 1024)
        return 0;
    jd_map_put(&c->warned, name, n, c);
    return 1;
}

static void free_zone(void *v)
{
    (void)v;
}

void jd_tzcache_free(jd_tzcache *c)
{
    if (!c)
        return;
    size_t it = 0;
    const jd_map_slot *s;
    while (jd_map_next(&c->zones, &it, &s))
        if (s->value != (void *)c)
            jd_tz_free(s->value);
    jd_map_free(&c->zones, free_zone);
    jd_map_free(&c->warned, NULL);
    free(c);
}

/* ---------------------------------------------------------------- windows */

static const char *const day_names[7] = {"mon", "tue", "wed", "thu", "fri", "sat", "sun"};

static const char *parse_day(const char *s, int *d)
{
    for (int i = 0; i < 7; i++)
        if (strncmp(s, day_names[i], 3) == 0) {
            *d = i;
            return s + 3;
        }
    return NULL;
}

static const char *parse_hm(const char *s, int *minutes)
{
    int h = 0, m = 0, digits = 0;
    while (*s >= '0' && *s <= '9' && digits < 2) {
        h = h * 10 + (*s++ - '0');
        digits++;
    }
    if (!digits)
        return NULL;
    if (*s == ':') {
        s++;
        if (s[0] < '0' || s[0] > '5' || s[1] < '0' || s[1] > '9')
            return NULL;
        m = (s[0] - '0') * 10 + (s[1] - '0');
        s += 2;
    }
    if (h > 24 || (h == 24 && m))
        return NULL;
    *minutes = h * 60 + m;
    return s;
}

int jd_window_parse(jd_window *w, const char *days, const char *hours, const char *tz, char *err, size_t errlen)
{
    memset(w, 0, sizeof *w);
    if (!days)
        w->days = 0x7f;
    else {
        const char *s = days;
        for (;;) {
            int a, b;
            if (!(s = parse_day(s, &a))) {
                snprintf(err, errlen, "window days '%s': expected day names like \"mon-fri\" or \"sat,sun\"", days);
                return -1;
            }
            b = a;
            if (*s == '-' && !(s = parse_day(s + 1, &b))) {
                snprintf(err, errlen, "window days '%s': a range needs two day names (\"mon-fri\")", days);
                return -1;
            }
            for (int d = a;; d = (d + 1) % 7) { /* "fri-mon" wraps the week */
                w->days |= (uint8_t)(1u << d);
                if (d == b)
                    break;
            }
            if (!*s)
                break;
            if (*s != ',') {
                snprintf(err, errlen, "window days '%s': separate days with ',' (\"mon-wed,fri\")", days);
                return -1;
            }
            s++;
        }
    }
    if (!hours) {
        w->start = 0;
        w->end = 1440;
    } else {
        int a, b;
        const char *s = parse_hm(hours, &a);
        if (!s || *s != '-' || !(s = parse_hm(s + 1, &b)) || *s || a == 1440) {
            snprintf(err, errlen, "window hours '%s': expected \"HH-HH\" or \"HH:MM-HH:MM\" (end exclusive)", hours);
            return -1;
        }
        if (a == b) {
            snprintf(err, errlen, "window hours '%s': the window is empty", hours);
            return -1;
        }
        w->start = (uint16_t)a;
        w->end = (uint16_t)(b == 0 ? 1440 : b); /* "18-00" ends at midnight */
    }
    if (tz && strcmp(tz, "user") == 0)
        w->tz_user = 1;
    else if (tz) {
        if (!*tz || strlen(tz) >= sizeof w->tz || !valid_name(tz)) {
            snprintf(err, errlen, "window tz '%s': \"user\" or an IANA zone name like \"Europe/Berlin\"", tz);
            return -1;
        }
        snprintf(w->tz, sizeof w->tz, "%s", tz);
    }
    snprintf(w->text, sizeof w->text, "%.24s %.24s", days ? days : "daily", hours ? hours : "00-24");
    return 0;
}

/* Whether local time l (ms, the zone's wall clock read as UTC) is inside the window. */
static int local_allows(const jd_window *w, int64_t l)
{
    int64_t d = floor_div(l, DAY_MS);
    int m = (int)((l - d * DAY_MS) / 60000);
    int wd = weekday(d);
    if (w->start < w->end)
        return (w->days >> wd & 1) && m >= w->start && m < w->end;
    return (m >= w->start && (w->days >> wd & 1)) || (m < w->end && (w->days >> ((wd + 6) % 7) & 1));
}

static int64_t offset_ms(const jd_tz *z, int64_t t)
{
    return z ? (int64_t)jd_tz_offset(z, floor_div(t, 1000)) * 1000 : 0;
}

int jd_window_allows(const jd_window *w, const jd_tz *z, int64_t t)
{
    return local_allows(w, t + offset_ms(z, t));
}

/* The window becomes open either when the wall clock reaches its start (at one of the
 * offsets in force between t and the horizon) or at an offset change that jumps the
 * clock into it. Every such moment in the next nine local days is a candidate; the
 * earliest allowed one is the answer. */
int64_t jd_window_next(const jd_window *w, const jd_tz *z, int64_t t)
{
    if (jd_window_allows(w, z, t))
        return t;
    int64_t horizon = t + 9 * DAY_MS, best = INT64_MAX;
    int64_t offs[24];
    int noffs = 0;
    offs[noffs++] = offset_ms(z, t);
    for (int64_t c = floor_div(t, 1000); z && noffs < 24;) {
        c = jd_tz_next_change(z, c);
        if (c == INT64_MAX || c * 1000 > horizon)
            break;
        int64_t cm = c * 1000;
        offs[noffs++] = offset_ms(z, cm);
        if (cm >= t && cm < best && jd_window_allows(w, z, cm))
            best = cm;
    }
    int64_t d0 = floor_div(t + offs[0], DAY_MS);
    for (int64_t d = d0 - 1; d <= d0 + 8; d++)
        for (int k = 0; k < noffs; k++) {
            int64_t u = d * DAY_MS + (int64_t)w->start * 60000 - offs[k];
            if (u >= t && u < best && jd_window_allows(w, z, u))
                best = u;
        }
    return best == INT64_MAX ? t : best;
}

/* ---------------------------------------------------------------- caps */

int jd_cap_parse(jd_cap *c, int64_t max, const char *per, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    if (max < 1 || max > 1000) {
        snprintf(err, errlen, "cap max must be a count from 1 to 1000");
        return -1;
    }
    if (!per || jd_duration_parse(per, strlen(per), &c->per_ms) || c->per_ms <= 0 || strlen(per) >= sizeof c->per) {
        snprintf(err, errlen, "cap per must be a duration like \"7d\"");
        return -1;
    }
    c->max = (uint32_t)max;
    snprintf(c->per, sizeof c->per, "%s", per);
    return 0;
}
