/* strata-test-freeport: prints N free TCP ports on 127.0.0.1 (default 1).
 * The kernel picks them (bind to port 0); all sockets stay open until every
 * port is chosen so the N ports are distinct. A server started on one a
 * moment later can still lose a race; the harness retries on a new port. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 1;
    int fds[64];
    if (n < 1 || n > 64) {
        fprintf(stderr, "usage: strata-test-freeport [COUNT 1..64]\n");
        return 2;
    }
    for (int i = 0; i < n; i++) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof a;
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (fds[i] < 0 || bind(fds[i], (struct sockaddr *)&a, sizeof a) < 0 ||
            getsockname(fds[i], (struct sockaddr *)&a, &len) < 0) {
            perror("strata-test-freeport");
            return 1;
        }
        printf("%u\n", ntohs(a.sin_port));
    }
    for (int i = 0; i < n; i++)
        close(fds[i]);
    return 0;
}
