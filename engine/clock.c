#define _POSIX_C_SOURCE 200809L
#include "clock.h"

#include <stdio.h>
#include <time.h>

void jd_clock_init_real(jd_clock *c)
{
    c->is_virtual = 0;
    c->now_ms = 0;
}

void jd_clock_init_virtual(jd_clock *c, int64_t start_ms)
{
    c->is_virtual = 1;
    c->now_ms = start_ms;
}

int64_t jd_clock_now(const jd_clock *c)
{
    if (c->is_virtual)
        return c->now_ms;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void jd_clock_advance(jd_clock *c, int64_t t)
{
    if (c->is_virtual && t > c->now_ms)
        c->now_ms = t;
}

int64_t jd_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t jd_monotonic_ms(void)
{
    return jd_monotonic_ns() / 1000000;
}

/* Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm,
 * public-domain arithmetic). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static int digits(const char *s, size_t n, size_t *i, int count, int *out)
{
    int v = 0;
    for (int k = 0; k < count; k++) {
        if (*i >= n || s[*i] < '0' || s[*i] > '9')
            return -1;
        v = v * 10 + (s[(*i)++] - '0');
    }
    *out = v;
    return 0;
}

static int month_days(int64_t y, int m)
{
    static const int md[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return 29;
    return md[m - 1];
}

int jd_time_parse(const char *s, size_t n, int64_t *ms)
{
    size_t i = 0;
    int y, mo, d, h = 0, mi = 0, sec = 0, frac = 0;
    if (digits(s, n, &i, 4, &y) || i >= n || s[i++] != '-' || digits(s, n, &i, 2, &mo) || i >= n || s[i++] != '-' ||
        digits(s, n, &i, 2, &d))
        return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > month_days(y, mo))
        return -1;
    int64_t offset_min = 0;
    if (i < n) {
        if (s[i] != 'T' && s[i] != 't' && s[i] != ' ')
            return -1;
        i++;
        if (digits(s, n, &i, 2, &h) || i >= n || s[i++] != ':' || digits(s, n, &i, 2, &mi))
            return -1;
        if (i < n && s[i] == ':') {
            i++;
            if (digits(s, n, &i, 2, &sec))
                return -1;
            if (i < n && (s[i] == '.' || s[i] == ',')) {
                i++;
                int nd = 0;
                while (i < n && s[i] >= '0' && s[i] <= '9') {
                    if (nd < 3)
                        frac = frac * 10 + (s[i] - '0');
                    nd++;
                    i++;
                }
                if (nd == 0)
                    return -1;
                for (int k = nd; k < 3; k++)
                    frac *= 10;
            }
        }
        if (h > 23 || mi > 59 || sec > 60)
            return -1;
        if (i >= n)
            return -1; /* a time without a zone is ambiguous: refuse it */
        if (s[i] == 'Z' || s[i] == 'z') {
            i++;
        } else if (s[i] == '+' || s[i] == '-') {
            int sign = s[i++] == '-' ? -1 : 1, oh, om;
            if (digits(s, n, &i, 2, &oh))
                return -1;
            if (i < n && s[i] == ':')
                i++;
            if (digits(s, n, &i, 2, &om) || oh > 23 || om > 59)
                return -1;
            offset_min = sign * (oh * 60 + om);
        } else {
            return -1;
        }
    }
    if (i != n)
        return -1;
    if (sec == 60)
        sec = 59; /* leap second: clamp */
    int64_t days = days_from_civil(y, mo, d);
    *ms = ((days * 86400 + h * 3600 + mi * 60 + sec) - offset_min * 60) * 1000 + frac;
    return 0;
}

size_t jd_time_format(int64_t ms, char *out)
{
    /* floor division by remainders: negating or re-multiplying would overflow near
     * INT64_MIN */
    int msec = (int)(ms % 1000);
    int64_t secs = ms / 1000 - (msec < 0);
    msec += msec < 0 ? 1000 : 0;
    int64_t rem = secs % 86400;
    int64_t days = secs / 86400 - (rem < 0);
    rem += rem < 0 ? 86400 : 0;
    int64_t y;
    int m, d;
    civil_from_days(days, &y, &m, &d);
    if (y < 0 || y > 9999) { /* rare: let printf handle signs and wide years */
        int n = snprintf(out, 32, "%04lld-%02d-%02dT%02d:%02d:%02d.%03dZ", (long long)y, m, d, (int)(rem / 3600),
                         (int)(rem / 60 % 60), (int)(rem % 60), msec);
        return n > 0 ? (size_t)n : 0;
    }
    /* the common case, written digit by digit: this runs for every action */
    int parts[7] = {(int)y, m, d, (int)(rem / 3600), (int)(rem / 60 % 60), (int)(rem % 60), msec};
    static const int width[7] = {4, 2, 2, 2, 2, 2, 3};
    static const char sep[7] = {'-', '-', 'T', ':', ':', '.', 'Z'};
    char *p = out;
    for (int i = 0; i < 7; i++) {
        for (int k = width[i] - 1, v = parts[i]; k >= 0; k--, v /= 10)
            p[k] = (char)('0' + v % 10);
        p += width[i];
        *p++ = sep[i];
    }
    *p = '\0';
    return (size_t)(p - out);
}

int jd_duration_parse(const char *s, size_t n, int64_t *ms)
{
    size_t i = 0;
    int64_t total = 0;
    if (n == 0)
        return -1;
    while (i < n) {
        int64_t v = 0;
        size_t start = i;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            if (v > 100000000000LL)
                return -1;
            v = v * 10 + (s[i++] - '0');
        }
        if (i == start || i >= n)
            return -1;
        int64_t unit;
        if (s[i] == 'm' && i + 1 < n && s[i + 1] == 's') {
            unit = 1;
            i += 2;
        } else {
            switch (s[i++]) {
            case 's': unit = 1000; break;
            case 'm': unit = 60 * 1000; break;
            case 'h': unit = 3600 * 1000; break;
            case 'd': unit = 86400 * 1000; break;
            case 'w': unit = 7 * 86400 * 1000; break;
            default: return -1;
            }
        }
        /* over a century is a typo, not a journey (checked before multiplying: a
         * large count of weeks would overflow) */
        const int64_t century = 100LL * 365 * 86400 * 1000;
        if (v > century / unit)
            return -1;
        total += v * unit;
        if (total > century)
            return -1;
    }
    if (total <= 0)
        return -1;
    *ms = total;
    return 0;
}
