/* script: one sandboxed Lua 5.4 state — text-only loading, a chosen set of libraries,
 * `require` limited to the engine's modules and files under the script directory (each
 * file read is kept, so a version can be rebuilt from its sources), an
 * instruction hook with a monotonic deadline, and a counting allocator with a cap.
 * Every call into Lua goes through jd_script_call (protected, with a traceback).
 * Uses buf, pool, embedded scripts (scripts_embed.c, generated). */
#ifndef JD_SCRIPT_H
#define JD_SCRIPT_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

typedef struct jd_script jd_script;

typedef struct jd_script_limits {
    int64_t call_ns;     /* per call deadline; 0: none */
    int64_t load_ns;     /* for running the entry file */
    size_t memory_bytes; /* cap for the state; 0: none */
} jd_script_limits;

/* A Lua failure as a structured result. Strings are owned; free with jd_script_error_clear. */
typedef struct jd_script_error {
    char *message;   /* without the position prefix */
    char *where;     /* "file:line" or "" */
    char *traceback; /* may be "" */
    int kind;        /* JD_SERR_* */
} jd_script_error;

enum { JD_SERR_NONE, JD_SERR_RUNTIME, JD_SERR_SYNTAX, JD_SERR_TIMEOUT, JD_SERR_MEMORY, JD_SERR_FILE };

void jd_script_error_clear(jd_script_error *e);
/* Fills e from a message "file:line: text" (parsed) and kind. */
void jd_script_error_set(jd_script_error *e, int kind, const char *msg, const char *traceback);
/* "file:line: message" into a buffer */
const char *jd_script_error_text(const jd_script_error *e, char *out, size_t n);

/* Creates a state; script_dir bounds `require` of user files (may be NULL). */
jd_script *jd_script_new(const char *script_dir, const jd_script_limits *limits);
void jd_script_free(jd_script *s);
lua_State *jd_script_L(jd_script *s);
void jd_script_set_owner(jd_script *s, void *owner);
void *jd_script_owner(lua_State *L);

/* Loads and runs the entry file in protected mode. 0 or -1 with err set. */
int jd_script_run_file(jd_script *s, const char *path, jd_script_error *err);
/* The files the state read from the script directory — the entry file (module NULL)
 * first, then each module `require` read, in load order — kept in memory so the same
 * version of the scripts can be rebuilt without the disk (jd_script_add_file). */
size_t jd_script_nfiles(const jd_script *s);
void jd_script_file(const jd_script *s, size_t i, const char **module, const char **path, const char **text,
                    size_t *len);
/* Gives a new state a kept file (module NULL: the entry file) and freezes it. */
void jd_script_add_file(jd_script *s, const char *module, const char *path, const char *text, size_t len);
/* From now on `require` reaches only the kept files: nothing more is read from the disk
 * (a retired version must not pick up a newer module). */
void jd_script_freeze(jd_script *s);
/* Loads and runs the kept entry file (jd_script_add_file) in protected mode. */
int jd_script_run_stored(jd_script *s, jd_script_error *err);
/* Loads and runs a text chunk (tests). */
int jd_script_run_string(jd_script *s, const char *code, const char *chunkname, jd_script_error *err);
/* Calls the function below nargs arguments on the stack, with the call deadline and a
 * traceback handler. On success leaves nres results; on failure pops everything it was
 * given and fills err. */
int jd_script_call(jd_script *s, int nargs, int nres, jd_script_error *err);
/* The same with an explicit deadline (0: none), for load-time work. */
int jd_script_call_ns(jd_script *s, int nargs, int nres, int64_t limit_ns, jd_script_error *err);
/* Forbids creating globals from now on (after the entry file has run). */
void jd_script_seal_globals(jd_script *s);
size_t jd_script_memory(const jd_script *s);

/* Registers a C module reachable by require (before running scripts). */
void jd_script_preload(jd_script *s, const char *name, lua_CFunction open);

#endif
