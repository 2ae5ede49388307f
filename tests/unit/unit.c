/* unit.c — the runner: forks each collected test, reports, and sums up. */
#include "unit.h"

#include <fnmatch.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

struct unit_test {
    const char *name;
    void (*fn)(void);
};

extern const struct unit_test unit_tests[];
extern const size_t unit_ntests;

static char unit_dir[4096];

void unit_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    _exit(1);
}

const char *unit_tmpdir(void)
{
    return unit_dir;
}

static int run_one(const struct unit_test *t)
{
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(unit_dir, sizeof unit_dir, "%s/intentd-unit-%s-XXXXXX", base, t->name);
    if (!mkdtemp(unit_dir)) {
        perror("mkdtemp");
        return 1;
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        alarm(300); /* a hung test fails instead of hanging the suite */
        t->fn();
        fflush(NULL);
        _exit(0);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
    }
    int ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!ok && WIFSIGNALED(status))
        fprintf(stderr, "%s: killed by signal %d\n", t->name, WTERMSIG(status));
    if (ok) {
        char cmd[4200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", unit_dir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", unit_dir);
    } else {
        fprintf(stderr, "%s: scratch folder kept: %s\n", t->name, unit_dir);
    }
    return ok ? 0 : 1;
}

/* usage: unit-tests [--list] [GLOB...] — runs the tests whose names match any GLOB. */
int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--list") == 0) {
        for (size_t i = 0; i < unit_ntests; i++) printf("%s\n", unit_tests[i].name);
        return 0;
    }
    int passed = 0, failed = 0;
    for (size_t i = 0; i < unit_ntests; i++) {
        const struct unit_test *t = &unit_tests[i];
        int selected = argc <= 1;
        for (int a = 1; a < argc && !selected; a++)
            selected = fnmatch(argv[a], t->name, 0) == 0;
        if (!selected) continue;
        if (run_one(t) == 0) {
            printf("PASS %s\n", t->name);
            passed++;
        } else {
            printf("FAIL %s\n", t->name);
            failed++;
        }
        fflush(stdout);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
