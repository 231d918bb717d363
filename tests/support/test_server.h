/* test_server.h — run a strata loop on a background thread for tests that
 * talk to it with ordinary blocking sockets from the main thread. */
#ifndef STRATA_TEST_SERVER_H
#define STRATA_TEST_SERVER_H

#include <pthread.h>
#include <stdint.h>

#include "core/http1_server.h"
#include "core/loop.h"

struct test_server {
    struct loop *loop;
    struct http1_server *server;
    pthread_t thread;
    uint16_t port;
};

/* Listens on 127.0.0.1:<free port> with cfg and runs the loop on a thread. 0 or <0. */
int test_server_start(struct test_server *ts, const struct http1_server_config *cfg);
/* Stops the loop, joins the thread, frees everything. */
void test_server_stop(struct test_server *ts);

/* Blocking helpers with a deadline: connect to 127.0.0.1:port (fd or <0);
 * send all bytes (MSG_NOSIGNAL; 0 or -errno); receive until `until`
 * returns true on what arrived so far or EOF/deadline. */
int test_connect(uint16_t port);
int test_send_all(int fd, const void *p, size_t n);
/* Reads what arrives within timeout_ms into out (NUL-terminated, cap-1 max).
 * Returns bytes read; *eof set when the peer closed. Stops early once
 * `complete(out, len)` (optional) says a full message is there. */
size_t test_recv(int fd, char *out, size_t cap, int timeout_ms, bool *eof,
                 bool (*complete)(const char *p, size_t n));

#endif
