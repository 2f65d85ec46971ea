#define _POSIX_C_SOURCE 200809L
#include "outbox.h"

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "event.h"
#include "json.h"

void jd_outbox_key(unsigned char key[16], const char *hex)
{
    for (int i = 0; i < 16; i++) {
        int v = 0;
        for (int k = 0; k < 2; k++) {
            char c = hex[2 * i + k];
            v = v * 16 + (c >= 'a' ? c - 'a' + 10 : c >= 'A' ? c - 'A' + 10 : c - '0');
        }
        key[i] = (unsigned char)v;
    }
}

static const msgpack_object *field(const msgpack_object *m, const char *k)
{
    return jd_mp_get(m, k, strlen(k));
}

int jd_outbox_decode(const void *k, size_t kn, const void *v, size_t vn, jd_outbox_row *row)
{
    static const char hx[] = "0123456789abcdef";
    if (kn != 16 && kn != 8)
        return -1;
    memset(row, 0, sizeof *row);
    if (kn == 16) { /* a row of a store from before: keyed by its id */
        for (int i = 0; i < 16; i++) {
            row->id[2 * i] = hx[((const unsigned char *)k)[i] >> 4];
            row->id[2 * i + 1] = hx[((const unsigned char *)k)[i] & 15];
        }
        row->id[32] = '\0';
    }
    /* a fixed-size zone per call: rows are small maps of scalars and one string */
    msgpack_zone z;
    msgpack_zone_init(&z, 512);
    msgpack_object o;
    int rc = -1;
    if (jd_mp_unpack(v, vn, &z, &o) == 0 && o.type == MSGPACK_OBJECT_MAP) {
        const msgpack_object *x;
        if ((x = field(&o, "seq")) && x->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            row->seq = x->via.u64;
        if ((x = field(&o, "attempts")) && x->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            row->attempts = (uint32_t)x->via.u64;
        if ((x = field(&o, "next")) &&
            (x->type == MSGPACK_OBJECT_POSITIVE_INTEGER || x->type == MSGPACK_OBJECT_NEGATIVE_INTEGER))
            row->next = x->via.i64;
        if ((x = field(&o, "status")) && x->type == MSGPACK_OBJECT_STR) {
            row->status = x->via.str.ptr; /* points into v: the reader references strings */
            row->status_len = x->via.str.size;
        }
        if ((x = field(&o, "error")) && x->type == MSGPACK_OBJECT_STR) {
            row->error = x->via.str.ptr;
            row->error_len = x->via.str.size;
        }
        if ((x = field(&o, "id")) && x->type == MSGPACK_OBJECT_STR && x->via.str.size == 32) {
            memcpy(row->id, x->via.str.ptr, 32);
            row->id[32] = '\0';
        }
        if ((x = field(&o, "action")) && x->type == MSGPACK_OBJECT_STR && row->id[0]) {
            row->action = x->via.str.ptr;
            row->action_len = x->via.str.size;
            rc = 0;
        }
    }
    msgpack_zone_destroy(&z);
    return rc;
}

void jd_outbox_encode(const jd_outbox_row *row, jd_buf *out)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, jd_buf_msgpack_write);
    msgpack_pack_map(&pk, 6 + (row->error != NULL));
    jd_mp_pack_cstr(&pk, "id");
    jd_mp_pack_str(&pk, row->id, 32);
    jd_mp_pack_cstr(&pk, "seq");
    msgpack_pack_uint64(&pk, row->seq);
    jd_mp_pack_cstr(&pk, "status");
    jd_mp_pack_str(&pk, row->status, row->status_len ? row->status_len : strlen(row->status));
    jd_mp_pack_cstr(&pk, "attempts");
    msgpack_pack_uint32(&pk, row->attempts);
    jd_mp_pack_cstr(&pk, "next");
    msgpack_pack_int64(&pk, row->next);
    jd_mp_pack_cstr(&pk, "action");
    jd_mp_pack_str(&pk, row->action, row->action_len);
    if (row->error) {
        jd_mp_pack_cstr(&pk, "error");
        jd_mp_pack_str(&pk, row->error, row->error_len);
    }
}

typedef struct list_ctx {
    const char *status;
    jd_buf *keep; /* copies of the values */
    jd_buf *offs; /* key[16] (8 used for a sequence key), u64 key length, offset, length */
} list_ctx;

static int collect(const void *k, size_t kn, const void *v, size_t vn, void *ud)
{
    list_ctx *c = ud;
    jd_outbox_row r;
    if (jd_outbox_decode(k, kn, v, vn, &r))
        return 0;
    if (c->status && (r.status_len != strlen(c->status) || memcmp(r.status, c->status, r.status_len) != 0))
        return 0;
    uint64_t klen = kn, off = c->keep->len, len = vn;
    unsigned char key[16] = {0};
    memcpy(key, k, kn);
    jd_buf_append(c->keep, v, vn);
    jd_buf_append(c->offs, key, 16);
    jd_buf_append(c->offs, &klen, 8);
    jd_buf_append(c->offs, &off, 8);
    jd_buf_append(c->offs, &len, 8);
    return 0;
}

static int by_seq(const void *a, const void *b)
{
    const jd_outbox_row *x = a, *y = b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

long jd_outbox_list(jd_store *st, const char *status, jd_buf *rows, jd_buf *keep)
{
    jd_buf offs;
    jd_buf_init(&offs);
    list_ctx c = {status, keep, &offs};
    if (jd_store_scan(st, JD_DB_OUTBOX, NULL, 0, collect, &c) < 0) {
        jd_buf_free(&offs);
        return -1;
    }
    long n = 0;
    for (size_t i = 0; i + 40 <= offs.len; i += 40) {
        uint64_t klen, off, len;
        memcpy(&klen, offs.data + i + 16, 8);
        memcpy(&off, offs.data + i + 24, 8);
        memcpy(&len, offs.data + i + 32, 8);
        jd_outbox_row r;
        if (jd_outbox_decode(offs.data + i, (size_t)klen, keep->data + off, len, &r) == 0) {
            jd_buf_append(rows, &r, sizeof r);
            n++;
        }
    }
    jd_buf_free(&offs);
    if (n > 1) /* (an empty list has no buffer to sort) */
        qsort(rows->data, (size_t)n, sizeof(jd_outbox_row), by_seq);
    return n;
}

/* The row of id, decoded, and its key: its sequence number through the id index, else (a
 * store from before) its id. 0, 1 when there is no such row, -1 on error. */
static int find(jd_store *st, const char *id, unsigned char key[16], size_t *kn, jd_outbox_row *row)
{
    const void *v;
    size_t vn;
    jd_outbox_key(key, id);
    *kn = 16;
    int rc = jd_store_get(st, JD_DB_OUTBOX_IDS, key, 16, &v, &vn);
    if (rc < 0)
        return -1;
    if (rc == 0 && vn == 8) {
        memcpy(key, v, 8);
        *kn = 8;
    }
    if ((rc = jd_store_get(st, JD_DB_OUTBOX, key, *kn, &v, &vn)))
        return rc;
    return jd_outbox_decode(key, *kn, v, vn, row) ? -1 : 0;
}

int jd_outbox_get(jd_store *st, const char *id, jd_outbox_row *row)
{
    unsigned char key[16];
    size_t kn;
    return find(st, id, key, &kn, row);
}

int jd_outbox_legacy(jd_store *st)
{
    return jd_store_count(st, JD_DB_OUTBOX) > jd_store_count(st, JD_DB_OUTBOX_IDS);
}

int jd_outbox_add(jd_store *st, const unsigned char id[16], uint64_t seq, const void *row, size_t n, int legacy)
{
    const void *v;
    size_t vn;
    if (legacy) { /* a row from before, under its id, is the action's row too */
        int rc = jd_store_get(st, JD_DB_OUTBOX, id, 16, &v, &vn);
        if (rc <= 0)
            return rc;
    }
    unsigned char seqk[8];
    jd_be64_put(seqk, seq);
    int rc = jd_store_put_new(st, JD_DB_OUTBOX_IDS, id, 16, seqk, 8);
    if (rc)
        return rc < 0 ? -1 : 0; /* there already: an action decided again keeps its row */
    return jd_store_append(st, JD_DB_OUTBOX, seqk, 8, row, n);
}

int jd_outbox_set(jd_store *st, const char *id, const char *status, uint32_t attempts, int64_t next, const char *error)
{
    unsigned char key[16];
    size_t kn;
    jd_outbox_row r;
    int rc = find(st, id, key, &kn, &r);
    if (rc)
        return rc;
    jd_buf copy, out;
    jd_buf_init(&copy);
    jd_buf_init(&out);
    jd_buf_append(&copy, r.action, r.action_len); /* v is invalid after the put */
    r.action = copy.data;
    r.status = status;
    r.status_len = strlen(status);
    r.attempts = attempts;
    r.next = next;
    r.error = error;
    r.error_len = error ? strlen(error) : 0;
    jd_outbox_encode(&r, &out);
    rc = jd_store_put(st, JD_DB_OUTBOX, key, kn, out.data, out.len, 0) ? -1 : 0;
    jd_buf_free(&copy);
    jd_buf_free(&out);
    return rc;
}

int jd_outbox_update(jd_store *st, const char *id, const char *status, uint32_t attempts, int64_t next,
                     const char *error)
{
    if (jd_store_begin(st))
        return -1;
    int rc = jd_outbox_set(st, id, status, attempts, next, error);
    if (rc || jd_store_commit(st)) {
        jd_store_abort(st);
        return rc ? rc : -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- CLI */

static void json_str(jd_buf *b, const char *s, size_t n)
{
    jd_buf_putc(b, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            jd_buf_printf(b, "\\%c", c);
        else if (c < 0x20)
            jd_buf_printf(b, "\\u%04x", c);
        else
            jd_buf_putc(b, (char)c);
    }
    jd_buf_putc(b, '"');
}

int jd_data_store_dir(const char *data_dir, int k, char *out, size_t n)
{
    struct stat st;
    snprintf(out, n, "%s/shard-%d/store", data_dir, k);
    if (stat(out, &st) == 0 && S_ISDIR(st.st_mode))
        return 0;
    if (k > 0)
        return -1;
    snprintf(out, n, "%s/store", data_dir); /* one shard: the data directory itself */
    return 0;
}

static int list_store(const char *path, const char *status)
{
    char err[512];
    jd_store *st = jd_store_open(path, 0, 1, err, sizeof err);
    if (!st) {
        fprintf(stderr, "journeyd: %s\n", err);
        return -1;
    }
    jd_buf rows, keep, line;
    jd_buf_init(&rows);
    jd_buf_init(&keep);
    jd_buf_init(&line);
    long n = jd_outbox_list(st, status, &rows, &keep);
    if (n < 0)
        fprintf(stderr, "journeyd: %s\n", jd_store_error(st));
    for (long i = 0; i < n; i++) {
        const jd_outbox_row *r = (const jd_outbox_row *)rows.data + i;
        jd_buf_reset(&line);
        jd_buf_printf(&line, "{\"id\":\"%s\",\"seq\":%llu,\"status\":", r->id, (unsigned long long)r->seq);
        json_str(&line, r->status ? r->status : "", r->status_len);
        jd_buf_printf(&line, ",\"attempts\":%u,\"next\":%lld", r->attempts, (long long)r->next);
        if (r->error) {
            jd_buf_puts(&line, ",\"error\":");
            json_str(&line, r->error, r->error_len);
        }
        jd_buf_puts(&line, ",\"action\":");
        jd_buf_append(&line, r->action, r->action_len); /* already JSON */
        jd_buf_puts(&line, "}\n");
        fwrite(line.data, 1, line.len, stdout);
    }
    jd_buf_free(&rows);
    jd_buf_free(&keep);
    jd_buf_free(&line);
    jd_store_close(st);
    return n < 0 ? -1 : 0;
}

int jd_cmd_outbox(int argc, char **argv)
{
    const char *dir = NULL, *status = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--status") == 0 && i + 1 < argc)
            status = argv[++i];
        else if (argv[i][0] != '-' && !dir)
            dir = argv[i];
        else {
            dir = NULL;
            break;
        }
    }
    if (!dir) {
        fprintf(stderr, "usage: journeyd outbox DATA_DIR [--status pending|retrying|delivered|dead]\n");
        return 2;
    }
    /* every shard's store, one after the other (rows are ordered within a shard) */
    char path[4096];
    int rc = 0;
    for (int k = 0; rc == 0 && jd_data_store_dir(dir, k, path, sizeof path) == 0; k++)
        rc = list_store(path, status);
    return rc ? 1 : 0;
}
