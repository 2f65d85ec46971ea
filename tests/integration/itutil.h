/* itutil: helpers shared by the integration tests — helper processes that print
 * "port N" when listening (receiver.py, smtp_sink.py), JSONL files they write, a libcurl
 * HTTP client, a free loopback port. Header-only; include after the system headers. */
#ifndef JD_ITUTIL_H
#define JD_ITUTIL_H

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct proc {
    pid_t pid;
    int port;
    char out[128];
} proc;

/* Starts argv with stdout on a pipe and waits (up to 10 s) for its "port N" line. */
static inline int start_proc(proc *p, const char *const argv[])
{
    int fds[2];
    if (pipe(fds))
        return -1;
    p->pid = fork();
    if (p->pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    char buf[64] = {0};
    size_t got = 0;
    struct pollfd pf = {.fd = fds[0], .events = POLLIN};
    while (got < sizeof buf - 1 && !strchr(buf, '\n') && poll(&pf, 1, 10000) > 0) {
        ssize_t n = read(fds[0], buf + got, sizeof buf - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fds[0]);
    if (sscanf(buf, "port %d", &p->port) != 1) {
        kill(p->pid, SIGTERM);
        waitpid(p->pid, NULL, 0);
        return -1;
    }
    return 0;
}

/* Stops it by its pid and removes its output file. */
static inline void stop_proc(proc *p)
{
    if (p->pid > 0) {
        kill(p->pid, SIGTERM);
        waitpid(p->pid, NULL, 0);
        p->pid = 0;
    }
    if (p->out[0])
        unlink(p->out);
}

/* Lines of a JSONL file containing every given substring (NULL-terminated). */
static inline size_t count_lines(const char *path, ...)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char *line = NULL;
    size_t cap = 0, n = 0;
    while (getline(&line, &cap, f) > 0) {
        va_list ap;
        va_start(ap, path);
        int ok = 1;
        const char *s;
        while ((s = va_arg(ap, const char *)))
            if (!strstr(line, s))
                ok = 0;
        va_end(ap);
        n += ok;
    }
    free(line);
    fclose(f);
    return n;
}

typedef struct resp {
    long status; /* -1: no answer */
    char body[65536];
    size_t n;
} resp;

static inline size_t it_on_body(char *p, size_t sz, size_t nm, void *ud)
{
    resp *r = ud;
    size_t n = sz * nm;
    if (r->n + n >= sizeof r->body)
        n = sizeof r->body - 1 - r->n;
    memcpy(r->body + r->n, p, n);
    r->n += n;
    r->body[r->n] = '\0';
    return sz * nm;
}

/* One request to 127.0.0.1:port. method "GET"/"POST"; auth is a full Authorization
 * header value or NULL; extra headers may be NULL (not freed). */
static inline void it_http(resp *r, int port, const char *method, const char *path, const char *auth,
                           const struct curl_slist *extra, const char *body, size_t blen)
{
    memset(r, 0, sizeof *r);
    CURL *c = curl_easy_init();
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    for (const struct curl_slist *x = extra; x; x = x->next)
        h = curl_slist_append(h, x->data);
    char ah[1024];
    if (auth) {
        snprintf(ah, sizeof ah, "Authorization: %s", auth);
        h = curl_slist_append(h, ah);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, it_on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)(body ? blen : 0));
    }
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    else
        r->status = -1;
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
}

/* A loopback TCP port nobody listens on right now. */
static inline int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    bind(fd, (struct sockaddr *)&a, sizeof a);
    getsockname(fd, (struct sockaddr *)&a, &l);
    close(fd);
    return ntohs(a.sin_port);
}

#endif
