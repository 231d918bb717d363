/* strata-bench-idleconns PORT N: opens N keep-alive connections to
 * 127.0.0.1:PORT, sends one GET on each and reads the whole response (so the
 * server has served a request and holds an idle keep-alive connection),
 * prints "ready" and holds them until stdin closes. bench/run measures the
 * server's resident memory before and after to get bytes per idle
 * connection. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: strata-bench-idleconns PORT COUNT\n");
        return 2;
    }
    int port = atoi(argv[1]), n = atoi(argv[2]);
    if (port <= 0 || port > 65535 || n <= 0 || n > 100000) {
        fprintf(stderr, "strata-bench-idleconns: PORT 1..65535, COUNT 1..100000\n");
        return 2;
    }
    struct rlimit rl = { (rlim_t)n + 64, (rlim_t)n + 64 };
    setrlimit(RLIMIT_NOFILE, &rl);
    int *fds = calloc((size_t)n, sizeof *fds);
    static const char req[] = "GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
    for (int i = 0; i < n; i++) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (fds[i] < 0 || connect(fds[i], (struct sockaddr *)&a, sizeof a) < 0) {
            perror("strata-bench-idleconns: connect");
            return 1;
        }
        struct timeval tv = { 5, 0 };
        setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        if (write(fds[i], req, sizeof req - 1) != (ssize_t)sizeof req - 1) {
            perror("strata-bench-idleconns: write");
            return 1;
        }
        /* Read until the end of a short response: head + body of "Hello, World!". */
        char buf[2048];
        size_t got = 0;
        for (;;) {
            ssize_t r = read(fds[i], buf + got, sizeof buf - 1 - got);
            if (r <= 0) {
                fprintf(stderr, "strata-bench-idleconns: connection %d: no response\n", i);
                return 1;
            }
            got += (size_t)r;
            buf[got] = '\0';
            char *end = strstr(buf, "\r\n\r\n");
            char *cl = strcasestr(buf, "content-length:");
            if (end && cl && got >= (size_t)(end + 4 - buf) + (size_t)atoi(cl + 15))
                break;
        }
    }
    printf("ready\n");
    fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0) {
    }
    for (int i = 0; i < n; i++)
        close(fds[i]);
    free(fds);
    return 0;
}
