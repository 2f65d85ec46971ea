/* A small standalone fuzz driver for targets written for libFuzzer
 * (LLVMFuzzerTestOneInput): runs every file of a corpus directory, then mutates corpus
 * entries (bit flips, byte edits, splices, truncation) until --seconds run out.
 * Deterministic for a given --seed. Crashes surface as signals / sanitizer reports.
 *   fuzz_x [--seconds N] [--seed S] CORPUS_DIR */
#define _DEFAULT_SOURCE
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct input {
    uint8_t *data;
    size_t len;
} input;

static uint64_t rng_state = 0x853c49e6748fea9bULL;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* The input under test, written to fuzz-crash.bin if the target dies. */
static const uint8_t *cur_data;
static size_t cur_len;

static void on_crash(int sig)
{
    int fd = open("fuzz-crash.bin", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        ssize_t w = write(fd, cur_data, cur_len);
        (void)w;
        close(fd);
    }
    static const char msg[] = "fuzz: crashing input saved to fuzz-crash.bin\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    signal(sig, SIG_DFL);
    raise(sig);
}

static void run_one(const uint8_t *d, size_t n)
{
    cur_data = d;
    cur_len = n;
    LLVMFuzzerTestOneInput(d, n);
}

static input *load_corpus(const char *dir, size_t *n)
{
    input *v = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return NULL;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        FILE *f = fopen(p, "rb");
        if (!f)
            continue;
        uint8_t *buf = malloc(1 << 20);
        size_t len = fread(buf, 1, 1 << 20, f);
        fclose(f);
        v = realloc(v, (*n + 1) * sizeof *v);
        v[(*n)++] = (input){buf, len};
    }
    closedir(d);
    return v;
}

int main(int argc, char **argv)
{
    double seconds = 5;
    const char *dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
            rng_state = strtoull(argv[++i], NULL, 0) | 1;
        else
            dir = argv[i];
    }
    signal(SIGABRT, on_crash);
    signal(SIGSEGV, on_crash);
    signal(SIGBUS, on_crash);
    signal(SIGFPE, on_crash);
    size_t n = 0;
    input *corpus = dir ? load_corpus(dir, &n) : NULL;
    for (size_t i = 0; i < n; i++)
        run_one(corpus[i].data, corpus[i].len);
    if (n == 0) {
        corpus = malloc(sizeof *corpus);
        corpus[0] = (input){malloc(1), 0};
        n = 1;
    }
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    unsigned long runs = 0;
    uint8_t *buf = malloc(1 << 16);
    for (;;) {
        if ((runs & 255) == 0) {
            clock_gettime(CLOCK_MONOTONIC, &t);
            if ((double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9 >= seconds)
                break;
        }
        input *src = &corpus[rnd() % n];
        size_t len = src->len < (1 << 15) ? src->len : (1 << 15);
        memcpy(buf, src->data, len);
        int edits = 1 + (int)(rnd() % 8);
        for (int k = 0; k < edits; k++) {
            size_t at = len ? rnd() % len : 0;
            switch (rnd() % 6) {
            case 0:
                if (len)
                    buf[at] ^= (uint8_t)(1u << (rnd() % 8));
                break;
            case 1:
                if (len)
                    buf[at] = (uint8_t)rnd();
                break;
            case 2: /* insert an interesting byte */
                if (len < (1 << 16) - 1) {
                    static const char bytes[] = "{}[]\":,0123456789-+.eE\\untfal \n\x00\xff\xc3\xa9";
                    memmove(buf + at + 1, buf + at, len - at);
                    buf[at] = (uint8_t)bytes[rnd() % (sizeof bytes - 1)];
                    len++;
                }
                break;
            case 3:
                if (len) {
                    memmove(buf + at, buf + at + 1, len - at - 1);
                    len--;
                }
                break;
            case 4: len = at; break;
            case 5: { /* splice another entry's tail */
                input *o = &corpus[rnd() % n];
                if (o->len) {
                    size_t from = rnd() % o->len, cnt = o->len - from;
                    if (at + cnt > (1 << 16))
                        cnt = (1 << 16) - at;
                    memcpy(buf + at, o->data + from, cnt);
                    len = at + cnt;
                }
                break;
            }
            }
        }
        run_one(buf, len);
        runs++;
    }
    fprintf(stderr, "%lu runs over %zu corpus entries\n", runs, n);
    for (size_t i = 0; i < n; i++)
        free(corpus[i].data);
    free(corpus);
    free(buf);
    return 0;
}
