/* bare_http — the ceiling of the HTTP stack: libmicrohttpd with intentd's threading (internal
 * thread pool, one epoll set per thread, keep-alive, same limits) answering every request,
 * after reading and dropping its body, with one constant JSON response.
 *
 *   bare_http PORT [THREADS]
 * Prints "listening PORT" when ready; runs until SIGTERM/SIGINT.  The threading is http.c's:
 * an acceptor thread feeding libmicrohttpd's internal pool (epoll) of THREADS workers.
 */
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **req_cls)
{
    static int marker;
    (void)url, (void)method, (void)version, (void)upload_data;
    if (!*req_cls) { /* headers only: answer on the last call, as intentd does */
        *req_cls = &marker;
        return MHD_YES;
    }
    if (*upload_size) {
        *upload_size = 0;
        return MHD_YES;
    }
    return MHD_queue_response(c, MHD_HTTP_OK, cls);
}

/* intentd's http.c threading: one thread accepts and hands each connection to the pool
 * (MHD_add_connection spreads them over the workers by descriptor). */
static int listen_fd = -1;

static void *acceptor_main(void *arg)
{
    struct MHD_Daemon *d = arg;
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(listen_fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd >= 0)
            MHD_add_connection(d, fd, (struct sockaddr *)&ss, sl);
        else if (errno == EINVAL)
            break; /* shut down */
    }
    return NULL;
}

static int listen_loopback(const char *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)atoi(port)),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0) return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, SOMAXCONN) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s PORT [THREADS]\n", argv[0]);
        return 2;
    }
    static const char body[] = "{\"score\": 0.5, \"model_version\": 1}";
    struct MHD_Response *r =
        MHD_create_response_from_buffer(sizeof body - 1, (void *)body, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    unsigned threads = argc > 2 ? (unsigned)atoi(argv[2]) : 2;
    listen_fd = listen_loopback(argv[1]);
    if (listen_fd < 0) {
        fprintf(stderr, "cannot listen on port %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    /* SIGTERM and SIGINT wait for main's sigwait, not for whichever thread they hit */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ITC, 0,
        NULL, NULL, on_request, r, MHD_OPTION_THREAD_POOL_SIZE, threads,
        MHD_OPTION_CONNECTION_LIMIT, 1024u, MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "cannot start on port %s\n", argv[1]);
        return 1;
    }
    pthread_t acceptor;
    if (pthread_create(&acceptor, NULL, acceptor_main, d) != 0) return 1;
    printf("listening %s\n", argv[1]);
    fflush(stdout);
    int sig;
    sigwait(&stop, &sig);
    shutdown(listen_fd, SHUT_RDWR);
    pthread_join(acceptor, NULL);
    close(listen_fd);
    MHD_stop_daemon(d);
    MHD_destroy_response(r);
    return 0;
}
