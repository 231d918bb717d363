/* strata-bench-hello: the smallest server on the core — "Hello, World!" for
 * every request — measured against NGINX's `return 200` by bench/run.
 *
 *   strata-bench-hello [--listen 127.0.0.1:8080] [--workers N]
 *
 * One loop per worker thread, each with its own SO_REUSEPORT listener.
 * SIGINT/SIGTERM drain and exit 0. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/http1_server.h"
#include "core/loop.h"
#include "core/net.h"

struct worker {
    struct loop *loop;
    struct http1_server *server;
    int lfd;
};

static const struct http1_header hello_headers[] = {
    { STR_LIT("Content-Type"), STR_LIT("text/plain") },
};

static void hello(struct http1_exchange *x, void *arg)
{
    (void)arg;
    http1_respond(x, 200, hello_headers, 1, STR_LIT("Hello, World!"));
}

static void on_drained(void *arg) { loop_stop(arg); }

static void drain_cb(void *arg)
{
    struct worker *w = arg;
    http1_server_drain(w->server, on_drained, w->loop);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    loop_run(w->loop);
    return NULL;
}

static struct worker *workers;
static struct loop_thread *threads;
static int nworkers;

static void on_signal(struct loop_signal *s, int signo)
{
    (void)s;
    (void)signo;
    for (int i = 0; i < nworkers; i++)
        loop_post(workers[i].loop, drain_cb, &workers[i]);
}

int main(int argc, char **argv)
{
    const char *listen_at = "127.0.0.1:8080";
    nworkers = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--listen") && i + 1 < argc) {
            listen_at = argv[++i];
        } else if (!strcmp(argv[i], "--workers") && i + 1 < argc) {
            nworkers = atoi(argv[++i]);
            if (nworkers < 1 || nworkers > 256) {
                fprintf(stderr, "strata-bench-hello: --workers: expected 1..256, got %s\n", argv[i]);
                return 2;
            }
        } else {
            fprintf(stderr, "usage: strata-bench-hello [--listen HOST:PORT] [--workers N]\n");
            return 2;
        }
    }
    struct net_addr addr;
    if (net_addr_parse(str_from_cstr(listen_at), true, &addr) < 0) {
        fprintf(stderr, "strata-bench-hello: --listen: invalid address %s\n", listen_at);
        return 2;
    }
    struct loop *main_loop = loop_new();
    struct loop_signal sigint, sigterm;
    /* Block the signals before any thread starts so that only signalfd sees them. */
    loop_signal_start(main_loop, &sigint, SIGINT, on_signal, NULL);
    loop_signal_start(main_loop, &sigterm, SIGTERM, on_signal, NULL);
    signal(SIGPIPE, SIG_IGN);

    workers = calloc((size_t)nworkers, sizeof *workers);
    threads = calloc((size_t)nworkers, sizeof *threads);
    struct http1_server_config cfg = { .handler = hello };
    struct net_listen_opts lo = { .reuseport = true };
    for (int i = 0; i < nworkers; i++) {
        struct worker *w = &workers[i];
        int rc = net_listen(&addr, &lo, &w->lfd);
        if (rc < 0) {
            fprintf(stderr, "strata-bench-hello: listen %s: %s\n", listen_at, strerror(-rc));
            return 1;
        }
        if (i == 0 && net_addr_port(&addr) == 0)
            net_local_addr(w->lfd, &addr); /* every worker on the port the first got */
        w->loop = loop_new();
        w->server = http1_server_new(w->loop, &cfg);
        http1_server_listen_fd(w->server, w->lfd);
    }
    char shown[64];
    fprintf(stderr, "strata-bench-hello listening on %s with %d worker(s)\n", net_addr_format(&addr, shown, sizeof shown),
            nworkers);
    for (int i = 0; i < nworkers; i++)
        pthread_create(&threads[i].id, NULL, worker_main, &workers[i]);
    /* The main loop only waits for signals; it stops when every worker is done. */
    loop_run_until_joined(main_loop, threads, (size_t)nworkers);
    for (int i = 0; i < nworkers; i++) {
        http1_server_free(workers[i].server);
        loop_free(workers[i].loop);
    }
    free(workers);
    free(threads);
    loop_free(main_loop);
    return 0;
}
