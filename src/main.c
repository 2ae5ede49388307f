/* main.c — intentd, the daemon: options, configuration, run, tear down.
 *
 * main() stays a short story; each step is a function below.  Exit codes: 0 success,
 * 1 a configuration or run-time failure, 2 a bad command line.
 */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"

#define EXIT_USAGE 2

struct options {
    const char *config_path; /* -c FILE */
    int check_config;        /* --check-config: validate and exit */
    int print_config;        /* --print-config: print the effective configuration and exit */
};

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: intentd [OPTION]...\n"
            "An online-learning daemon: learns purchase intent from Kafka click and\n"
            "transaction events and serves scores over HTTP.\n"
            "\n"
            "  -c, --config FILE   the configuration (default %s)\n"
            "      --check-config  validate the configuration and exit: 0 if valid, else 1\n"
            "                      with FILE:LINE:COL: message on stderr\n"
            "      --print-config  print the effective configuration (every default filled)\n"
            "  -V, --version       print the version and exit\n"
            "  -h, --help          print this help and exit\n"
            "\n"
            "Signals: SIGTERM/SIGINT stop cleanly (checkpoint, commit offsets); SIGHUP reloads\n"
            "the settings that can change at run time.\n",
            CONFIG_DEFAULT_PATH);
}

__attribute__((format(printf, 1, 2))) static int bad_usage(const char *fmt, ...)
{
    fputs("intentd: ", stderr);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nTry 'intentd --help' for more information.\n", stderr);
    return EXIT_USAGE;
}

/* Fills opt from argv.  Returns -1 to go on, or the exit code (help, version, bad usage). */
static int parse_options(int argc, char **argv, struct options *opt)
{
    enum { OPT_CHECK_CONFIG = 256, OPT_PRINT_CONFIG };
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, OPT_CHECK_CONFIG},
        {"print-config", no_argument, NULL, OPT_PRINT_CONFIG},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    opt->config_path = CONFIG_DEFAULT_PATH;
    opterr = 0; /* our own messages, each with the hint to --help */
    int c;
    while ((c = getopt_long(argc, argv, ":c:Vh", longopts, NULL)) != -1) {
        switch (c) {
        case 'c':
            opt->config_path = optarg;
            break;
        case OPT_CHECK_CONFIG:
            opt->check_config = 1;
            break;
        case OPT_PRINT_CONFIG:
            opt->print_config = 1;
            break;
        case 'V':
            printf("intentd %s\n", INTENTD_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        case ':':
            return bad_usage("option '%s' needs an argument", argv[optind - 1]);
        default: {
            const char *arg = argv[optind - 1];
            if (strncmp(arg, "--", 2) == 0) {
                /* optopt is set for a known long option given an argument it does not take */
                if (optopt)
                    return bad_usage("option '%.*s' takes no argument", (int)strcspn(arg, "="),
                                     arg);
                return bad_usage("unknown option '%s'", arg);
            }
            char s[3] = {'-', (char)optopt, '\0'};
            return bad_usage("unknown option '%s'", s);
        }
        }
    }
    if (optind < argc) return bad_usage("unexpected argument '%s'", argv[optind]);
    return -1;
}

/* The daemon proper: ingest, trainer, checkpointer and HTTP threads until a signal. */
static int intentd_run(struct config *cfg)
{
    LOG(LOG_ERROR, "main", "%s: configuration valid; the daemon loop is not built yet",
        cfg->path ? cfg->path : "(defaults)");
    return 1;
}

int main(int argc, char **argv)
{
    struct options opt = {0};
    int rc = parse_options(argc, argv, &opt);
    if (rc >= 0) return rc;

    struct config *cfg = config_new();
    if (!cfg) {
        fprintf(stderr, "intentd: out of memory\n");
        return 1;
    }
    char err[1024];
    if (config_load(cfg, opt.config_path, err, sizeof err) != 0) {
        /* the contract's FILE:LINE:COL: message, alone on its line, for editors and scripts */
        fprintf(stderr, "%s\n", err);
        config_free(cfg);
        return 1;
    }

    if (opt.print_config) {
        rc = config_print(cfg, stdout) == 0 ? 0 : 1;
    } else if (opt.check_config) {
        rc = 0;
    } else {
        log_set_level((enum log_level)cfg->log_level);
        rc = intentd_run(cfg);
    }

    config_free(cfg);
    return rc;
}
