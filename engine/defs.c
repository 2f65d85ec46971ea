#include "defs.h"

#include <stdlib.h>
#include <string.h>

#include "buf.h"

/* Names this long (with the type's name, NUL-separated, over 512 bytes) are not looked
 * up: the index was once keyed by that text in a 512-byte buffer. */
static int name_fits(jd_event_type type, size_t n)
{
    return strlen(jd_event_type_name(type)) + 1 + n <= 512;
}

static int order(const void *a, const void *b)
{
    const jd_trigger *x = *(jd_trigger *const *)a, *y = *(jd_trigger *const *)b;
    if (x->unit != y->unit)
        return x->unit < y->unit ? -1 : 1;
    if (x->role != y->role)
        return x->role < y->role ? -1 : 1;
    if (x->stage != y->stage)
        return x->stage < y->stage ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

static void tlist_add(jd_tlist *l, jd_trigger *t)
{
    l->t = jd_xrealloc(l->t, (l->n + 1) * sizeof *l->t);
    l->t[l->n++] = t;
}

void jd_defs_build_index(jd_defs *d)
{
    for (size_t i = 0; i < d->ntriggers; i++) {
        jd_trigger *t = d->triggers[i];
        if (t->is_after)
            continue;
        if (!t->name) {
            tlist_add(&d->any[t->type], t);
            continue;
        }
        size_t n = strlen(t->name);
        jd_tlist *l = jd_map_get(&d->index[t->type], t->name, n);
        if (!l) {
            l = jd_xcalloc(1, sizeof *l);
            jd_map_put(&d->index[t->type], t->name, n, l);
        }
        tlist_add(l, t);
    }
    for (int i = 0; i < JD_EV_NTYPES; i++) {
        size_t it = 0;
        const jd_map_slot *s;
        while (jd_map_next(&d->index[i], &it, &s)) {
            jd_tlist *l = s->value;
            qsort(l->t, l->n, sizeof *l->t, order);
        }
    }
    for (int i = 0; i < JD_EV_NTYPES; i++)
        if (d->any[i].n)
            qsort(d->any[i].t, d->any[i].n, sizeof *d->any[i].t, order);
}

const jd_tlist *jd_defs_lookup(const jd_defs *d, jd_event_type type, const char *name, size_t n, jd_tlist *scratch,
                               size_t scratch_cap)
{
    const jd_tlist *named = NULL;
    if (d->index[type].count && name_fits(type, n))
        named = jd_map_get(&d->index[type], name, n);
    const jd_tlist *any = &d->any[type];
    if (!any->n)
        return named;
    if (!named)
        return any;
    /* both: merge the two sorted lists */
    size_t i = 0, j = 0, k = 0;
    while ((i < named->n || j < any->n) && k < scratch_cap) {
        if (j >= any->n || (i < named->n && order(&named->t[i], &any->t[j]) <= 0))
            scratch->t[k++] = named->t[i++];
        else
            scratch->t[k++] = any->t[j++];
    }
    scratch->n = k;
    return scratch;
}

static void free_tlist(void *p)
{
    jd_tlist *l = p;
    free(l->t);
    free(l);
}

void jd_defs_free(jd_defs *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->ntriggers; i++) {
        jd_trigger *t = d->triggers[i];
        for (size_t k = 0; k < t->npreds; k++)
            jd_pred_free(&t->preds[k]);
        free(t->preds);
        free(t->name);
        free(t->delay_text);
        free(t->loc);
        free(t->rule_id);
        free(t);
    }
    free(d->triggers);
    for (size_t i = 0; i < d->njourneys; i++) {
        jd_journey *j = &d->journeys[i];
        for (size_t s = 0; s < j->nstages; s++) {
            free(j->stages[s].name);
            free(j->stages[s].loc);
            free(j->stages[s].on);
            free(j->stages[s].after);
        }
        free(j->stages);
        free(j->goals);
        free(j->exits);
        free(j->name);
        free(j->loc);
        free(j->key);
        for (size_t m = 0; m < j->nmigrate; m++)
            free(j->migrate[m].from);
        free(j->migrate);
    }
    free(d->journeys);
    for (size_t i = 0; i < d->nchannels; i++) {
        free(d->channels[i].name);
        free(d->channels[i].type);
        free(d->channels[i].window);
    }
    free(d->channels);
    for (size_t i = 0; i < d->nsources; i++) {
        free(d->sources[i].name);
        free(d->sources[i].loc);
    }
    free(d->sources);
    jd_map_free(&d->channel_by_name, NULL);
    jd_map_free(&d->journey_by_name, NULL);
    for (int i = 0; i < JD_EV_NTYPES; i++)
        jd_map_free(&d->index[i], free_tlist);
    for (int i = 0; i < JD_EV_NTYPES; i++)
        free(d->any[i].t);
    free(d);
}

const jd_journey *jd_defs_journey(const jd_defs *d, const char *name, size_t n)
{
    return jd_map_get(&d->journey_by_name, name, n);
}

const jd_channel *jd_defs_channel(const jd_defs *d, const char *name, size_t n)
{
    return jd_map_get(&d->channel_by_name, name, n);
}

const jd_source *jd_defs_source(const jd_defs *d, const char *name)
{
    for (size_t i = 0; i < d->nsources; i++)
        if (strcmp(d->sources[i].name, name) == 0)
            return &d->sources[i];
    return NULL;
}

int jd_journey_migrate_stage(const jd_journey *j, const char *old_stage, size_t n)
{
    for (size_t m = 0; m < j->nmigrate; m++)
        if (strlen(j->migrate[m].from) == n && memcmp(j->migrate[m].from, old_stage, n) == 0)
            return j->migrate[m].to;
    for (size_t s = 0; s < j->nstages; s++)
        if (strlen(j->stages[s].name) == n && memcmp(j->stages[s].name, old_stage, n) == 0)
            return (int)s;
    return j->migrate_other;
}
