/* window: send windows (days of the week and hours of the day in a time zone), the next
 * moment a window allows, frequency cap specs, and time zones read from the system's
 * TZif files (/usr/share/zoneinfo, or $TZDIR) with their POSIX-TZ footer rules.
 * Pure computation on the caller's clock: no process-wide TZ, no localtime.
 * Uses map, buf, clock. */
#ifndef JD_WINDOW_H
#define JD_WINDOW_H

#include <stddef.h>
#include <stdint.h>

#include "map.h"

/* ---------------------------------------------------------------- time zones */

typedef struct jd_tz jd_tz;

/* Loads an IANA zone ("Europe/Berlin"); NULL when the name is malformed, unknown or
 * the file is not TZif. "UTC" works without tzdata. The caller owns the result. */
jd_tz *jd_tz_load(const char *name);
void jd_tz_free(jd_tz *z);
const char *jd_tz_name(const jd_tz *z);
/* UTC offset in seconds at UTC time t (seconds since the epoch). */
int32_t jd_tz_offset(const jd_tz *z, int64_t t);
/* The first change of offset rules strictly after t (seconds); INT64_MAX: none. */
int64_t jd_tz_next_change(const jd_tz *z, int64_t t);

/* Zones by name, each loaded once (unknown names are remembered as unknown). */
typedef struct jd_tzcache {
    jd_map zones;  /* name -> jd_tz*, or the cache itself for "unknown" */
    jd_map warned; /* bad user timezones already logged */
} jd_tzcache;

/* The zone, loading it on first use (*c is allocated on first call); NULL: unknown. */
const jd_tz *jd_tzcache_get(jd_tzcache **c, const char *name, size_t n);
/* 1 the first time name is passed (to log a bad user timezone once). */
int jd_tzcache_first_warning(jd_tzcache **c, const char *name, size_t n);
void jd_tzcache_free(jd_tzcache *c);

/* ---------------------------------------------------------------- windows */

/* A send window: allowed on the listed days between start and end (local minutes of
 * the day, end exclusive). start > end wraps midnight, and the night belongs to the day
 * it starts on ("fri 22-06" is Friday 22:00 to Saturday 06:00). */
typedef struct jd_window {
    uint8_t days; /* bit 0 Monday ... bit 6 Sunday */
    uint16_t start, end;
    uint8_t tz_user; /* the person's `timezone` trait (falling back to the default zone) */
    char tz[64];     /* a fixed IANA name; "" (and not tz_user): the default zone */
    char text[64];   /* "mon-fri 09-17", for reasons */
} jd_window;

/* Parses days ("mon-fri", "sat,sun", "mon-wed,fri"; NULL: every day), hours ("09-17",
 * "09:30-17:00", "22-06"; NULL: all day) and tz ("user", an IANA name, NULL: default).
 * Checks syntax only (a fixed zone's existence is the caller's check). 0, or -1 and err. */
int jd_window_parse(jd_window *w, const char *days, const char *hours, const char *tz, char *err, size_t errlen);
/* 1 when the window allows UTC time t (ms) in zone z. */
int jd_window_allows(const jd_window *w, const jd_tz *z, int64_t t);
/* The first moment >= t (ms) the window allows in zone z. */
int64_t jd_window_next(const jd_window *w, const jd_tz *z, int64_t t);

/* ---------------------------------------------------------------- caps */

/* At most max sends per person and channel within any sliding period of per_ms. */
typedef struct jd_cap {
    uint32_t max; /* 0: no cap */
    int64_t per_ms;
    char per[16]; /* as written, for reasons */
} jd_cap;

/* max >= 1, per a duration ("7d"). 0, or -1 and err. */
int jd_cap_parse(jd_cap *c, int64_t max, const char *per, char *err, size_t errlen);

#endif
