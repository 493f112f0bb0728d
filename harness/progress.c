/* Sweep progress on stderr: on a terminal one bar line (points done, the
 * current point, ETA) redrawn in place; otherwise one plain log line per
 * point, which is what a batch system's log file wants. */
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "progress.h"
#include "runner.h"

static struct {
    bool tty;
    bool shown;          /* a bar is on the terminal's last line */
    uint64_t total;
    uint64_t measured;   /* points run here, resumed ones excluded: for the ETA */
    double measured_s;
} state;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int term_width(void)
{
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 40)
        return ws.ws_col;
    return 80;
}

static void fmt_duration(char *buf, size_t len, double s)
{
    if (s >= 3600)
        snprintf(buf, len, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
    else if (s >= 60)
        snprintf(buf, len, "%dm%02ds", (int)(s / 60), (int)s % 60);
    else
        snprintf(buf, len, "%ds", (int)s);
}

void dy_progress_start(uint64_t total)
{
    memset(&state, 0, sizeof state);
    state.tty = isatty(STDERR_FILENO);
    state.total = total;
}

void dy_progress_clear(void)
{
    if (!state.shown)
        return;
    fputs("\r\033[K", stderr);
    state.shown = false;
}

double dy_progress_begin(uint64_t done, const char *label)
{
    if (!state.tty)
        return now_s();
    char eta[32] = "?";
    if (state.measured > 0)
        fmt_duration(eta, sizeof eta, state.measured_s / state.measured * (double)(state.total - done));
    enum { BAR = 20 };
    char bar[BAR + 1];
    int filled = state.total ? (int)(done * BAR / state.total) : BAR;
    for (int i = 0; i < BAR; i++)
        bar[i] = i < filled ? '#' : '.';
    bar[BAR] = '\0';
    char line[512];
    snprintf(line, sizeof line, "[%s] %llu/%llu ETA %s  %s", bar, (unsigned long long)done,
             (unsigned long long)state.total, eta, label);
    /* one terminal line, so that \r returns to its start */
    int width = term_width() - 1;
    if ((int)strlen(line) > width)
        line[width] = '\0';
    fprintf(stderr, "\r\033[K%s", line);
    fflush(stderr);
    state.shown = true;
    return now_s();
}

void dy_progress_end(uint64_t done, const char *label, const struct dy_point *p,
                     enum dy_point_outcome outcome, double started)
{
    double seconds = now_s() - started;
    if (outcome != DY_POINT_RESUMED) {
        state.measured++;
        state.measured_s += seconds;
    }
    /* on a terminal only what needs a look stays on screen */
    if (state.tty && outcome == DY_POINT_RESUMED)
        return;
    if (state.tty && outcome == DY_POINT_STORED && !strcmp(p->status, "ok"))
        return;
    dy_progress_clear();
    if (outcome == DY_POINT_RESUMED)
        fprintf(stderr, "dyno: [%llu/%llu] %s: stored before, not run again (--resume)\n",
                (unsigned long long)done, (unsigned long long)state.total, label);
    else
        fprintf(stderr, "dyno: [%llu/%llu] %s: %s%s%s (%.1f s)\n", (unsigned long long)done,
                (unsigned long long)state.total, label, p->status, p->reason[0] ? ": " : "",
                p->reason, seconds);
}

void dy_progress_finish(void)
{
    dy_progress_clear();
}
