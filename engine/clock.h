/* clock: the engine's notion of time — a real or virtual clock in milliseconds since
 * the Unix epoch (UTC), ISO 8601 timestamps and "2d"-style durations.
 * Uses nothing else. Virtual clocks only move forward, and only when told to. */
#ifndef JD_CLOCK_H
#define JD_CLOCK_H

#include <stddef.h>
#include <stdint.h>

typedef struct jd_clock {
    int is_virtual;
    int64_t now_ms; /* virtual clocks only */
} jd_clock;

void jd_clock_init_real(jd_clock *c);
void jd_clock_init_virtual(jd_clock *c, int64_t start_ms);
int64_t jd_clock_now(const jd_clock *c);
/* Moves a virtual clock forward to t (never backwards). No-op for the real clock. */
void jd_clock_advance(jd_clock *c, int64_t t);

/* Milliseconds from a monotonic clock, for deadlines and latency only. */
int64_t jd_monotonic_ms(void);
int64_t jd_monotonic_ns(void);

/* Parses RFC 3339 / ISO 8601: "2026-11-01T10:00:00Z", fractional seconds, offsets
 * (+02:00, +0200), or a bare date. Returns 0 and sets *ms, or -1. */
int jd_time_parse(const char *s, size_t n, int64_t *ms);
/* Formats as "2026-11-01T10:00:00.000Z" into out (at least 25 bytes). Returns length. */
size_t jd_time_format(int64_t ms, char *out);

/* Parses a duration: one or more <integer><unit> with units ms, s, m, h, d, w
 * ("90s", "15m", "2h", "3d", "1w", "1d12h"). Returns 0 and sets *ms (> 0), or -1. */
int jd_duration_parse(const char *s, size_t n, int64_t *ms);

#endif
