/* conn_limits.c — per-client-IP connection counts (engine.h), shared by
 * every worker of the process. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/engine.h"

/* ---- per-client-IP connection limits --------------------------------------------------- */

/* A small chained hash of client addresses with open connections, under
 * one mutex: taken twice per connection, never per request. */
struct ip_count {
    struct ip_count *next;
    char ip[48];
    uint32_t n;
};

struct conn_limits {
    pthread_mutex_t mu;
    struct ip_count *buckets[1024];
};

struct conn_limits *conn_limits_new(void)
{
    struct conn_limits *cl = calloc(1, sizeof *cl);
    if (cl)
        pthread_mutex_init(&cl->mu, NULL);
    return cl;
}

void conn_limits_free(struct conn_limits *cl)
{
    if (!cl)
        return;
    for (size_t i = 0; i < 1024; i++)
        for (struct ip_count *e = cl->buckets[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    pthread_mutex_destroy(&cl->mu);
    free(cl);
}

static struct ip_count **ip_slot(struct conn_limits *cl, const char *ip)
{
    uint32_t h = 2166136261u;
    for (const char *p = ip; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    struct ip_count **pp = &cl->buckets[h % 1024];
    while (*pp && strcmp((*pp)->ip, ip))
        pp = &(*pp)->next;
    return pp;
}

bool conn_limits_acquire(struct conn_limits *cl, const struct net_addr *peer, uint32_t max)
{
    char ip[48];
    net_addr_ip(peer, ip, sizeof ip);
    bool ok = true;
    pthread_mutex_lock(&cl->mu);
    struct ip_count **pp = ip_slot(cl, ip);
    if (!*pp) {
        *pp = calloc(1, sizeof **pp);
        if (*pp)
            snprintf((*pp)->ip, sizeof (*pp)->ip, "%s", ip);
    }
    if (!*pp || (*pp)->n >= max)
        ok = false;
    else
        (*pp)->n++;
    if (*pp && (*pp)->n == 0) { /* refused before its first connection: nothing to keep */
        struct ip_count *e = *pp;
        *pp = e->next;
        free(e);
    }
    pthread_mutex_unlock(&cl->mu);
    return ok;
}

void conn_limits_release(struct conn_limits *cl, const struct net_addr *peer)
{
    char ip[48];
    net_addr_ip(peer, ip, sizeof ip);
    pthread_mutex_lock(&cl->mu);
    struct ip_count **pp = ip_slot(cl, ip);
    if (*pp && --(*pp)->n == 0) {
        struct ip_count *e = *pp;
        *pp = e->next;
        free(e);
    }
    pthread_mutex_unlock(&cl->mu);
}
