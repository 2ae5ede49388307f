/* bare_http_json — the ceiling of HTTP + JSON: bare_http's server (same threading, the same
 * per-connection body buffer as intentd's http.c) that also parses each body with jansson
 * (json_loadb, as intentd does), reads every field of its "features" object, and answers a
 * small JSON computed from them, printed with snprintf into a stack buffer.
 *
 *   bare_http_json PORT [THREADS]
 * Prints "listening PORT" when ready; runs until SIGTERM/SIGINT.  The threading is http.c's:
 * an acceptor thread feeding libmicrohttpd's internal pool (epoll) of THREADS workers.
 */
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_BODY 65536

struct conn {
    size_t len;
    char body[MAX_BODY];
};

/* Reads every field the way a scorer must: numbers, booleans and strings by name. */
static double read_fields(const json_t *features)
{
    double acc = 0;
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)features, name, v)
    {
        if (json_is_number(v))
            acc += json_number_value(v);
        else if (json_is_true(v))
            acc += 1;
        else if (json_is_string(v))
            acc += (double)json_string_length(v);
        acc += (double)(unsigned char)name[0] * 1e-6;
    }
    return acc;
}

static enum MHD_Result answer(struct MHD_Connection *c, unsigned code, const char *body, size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    enum MHD_Result ret = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **req_cls)
{
    (void)cls, (void)url, (void)method, (void)version;
    struct conn *cx = *req_cls;
    if (!cx) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        cx = ci ? ci->socket_context : NULL;
        if (!cx) return MHD_NO;
        cx->len = 0;
        *req_cls = cx;
        return MHD_YES;
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (n > MAX_BODY - cx->len) return MHD_NO;
        memcpy(cx->body + cx->len, upload_data, n);
        cx->len += n;
        return MHD_YES;
    }
    json_error_t err;
    json_t *root = json_loadb(cx->body, cx->len, 0, &err);
    const json_t *features = root ? json_object_get(root, "features") : NULL;
    if (!json_is_object(features)) {
        json_decref(root);
        static const char bad[] = "{\"error\": \"bad request\"}";
        return answer(c, MHD_HTTP_BAD_REQUEST, bad, sizeof bad - 1);
    }
    double v = read_fields(features);
    json_decref(root);
    char out[96];
    int n =
        snprintf(out, sizeof out, "{\"score\": %.9g, \"model_version\": 1}", 1.0 / (1.0 + v * v));
    return answer(c, MHD_HTTP_OK, out, (size_t)n);
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    (void)cls, (void)c;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED)
        *socket_context = malloc(sizeof(struct conn));
    else if (toe == MHD_CONNECTION_NOTIFY_CLOSED)
        free(*socket_context);
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
        NULL, NULL, on_request, NULL, MHD_OPTION_THREAD_POOL_SIZE, threads,
        MHD_OPTION_CONNECTION_LIMIT, 1024u, MHD_OPTION_CONNECTION_TIMEOUT, 30u,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, NULL, MHD_OPTION_END);
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
    return 0;
}
