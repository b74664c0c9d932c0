/* labwork: the scenario lab's workload program (models/lab/README.md).
 *
 * One small, dependency-free program with five modes. The driver (run.py) compiles it
 * at run time, writes a schedule file for each run (the shape of the run: memory,
 * request rate, fork rate or disk bytes over time, all computed by families.py) and
 * starts it. The program follows the schedule, reports what it observes as JSON lines
 * with wall-clock millisecond timestamps, and always stops by itself at `duration`.
 *
 *   labwork MODE key=value...
 *
 * Common keys:
 *   duration=S     seconds after start at which the program exits by itself
 *   schedule=FILE  lines "t_seconds v1 [v2]", ascending t; values are interpolated
 *                  linearly between lines and held after the last one
 *   events=FILE    JSON-lines event log (appended with O_APPEND, one write per event,
 *                  so every event written before a SIGKILL is on disk)
 *   join=F1,F2     cgroup.procs files the program writes its own pid to before doing
 *                  anything else, so the whole run is accounted to its cgroup
 *   seed=N         seed of the program's own random numbers (request arrivals)
 *   tick=MS        control period (default 100 ms)
 *   hb=MS          heartbeat period (default 1000 ms)
 *
 * Modes and their schedule columns:
 *   mem    v1 = bytes of anonymous memory kept touched (every page written; shrinking
 *          returns pages with MADV_DONTNEED), v2 = CPU duty cycle 0..1 (busy share of
 *          each tick, burned as real CPU time).
 *   serve  v1 = request arrival rate (Poisson, requests/s), v2 = duty of a CPU hog
 *          thread in the same cgroup. One FIFO server thread burns work_ms of its own
 *          CPU time per request; per-request latency (completion - arrival) is written
 *          to lat=FILE as "completion_wall_ms latency_ms" lines. base=BYTES of memory.
 *   fork   v1 = fork rate (children/s). Children sleep life=S seconds (life<0: until
 *          the run's end) and exit. A failed fork is reported (event "fork_fail" with
 *          errno; the first EAGAIN is the label) and retried at the schedule's rate.
 *   disk   v1 = live bytes wanted in files under dir=DIR (8 MiB segments, written at
 *          most max_rate=B/s and fsync'd every 4 MiB; when v1 falls, the oldest segments
 *          are deleted, like log rotation). ENOSPC is reported (event "enospc").
 *   cache  writes file=PATH of size=B at wrate=B/s, then reads it sequentially over
 *          and over at rrate=B/s: page cache that fills the cgroup's limit and is
 *          reclaimed, never an OOM. base=BYTES of anonymous memory.
 *
 * Events: {"t":ms,"ev":"start",...}, "hb" (every hb ms, with the mode's state),
 * "enospc", "fork_fail", "end" (reason "duration"). An OOM kill is seen from outside.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int g_argc;
static char **g_argv;
static int ev_fd = 1;

static const char *arg_s(const char *key, const char *def) {
    size_t n = strlen(key);
    for (int i = 2; i < g_argc; i++)
        if (strncmp(g_argv[i], key, n) == 0 && g_argv[i][n] == '=') return g_argv[i] + n + 1;
    return def;
}

static double arg_d(const char *key, double def) {
    const char *s = arg_s(key, NULL);
    return s ? strtod(s, NULL) : def;
}

static void die(const char *what) {
    fprintf(stderr, "labwork: %s: %s\n", what, strerror(errno));
    exit(2);
}

static double wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double thread_cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_until_mono(double t) {
    struct timespec ts;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

/* One event line, one write(2): {"t":<wall ms>,<fields>} */
static void emit(const char *fmt, ...) {
    char buf[1024];
    int n = snprintf(buf, sizeof buf, "{\"t\":%.0f,", wall_ms());
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(buf + n, sizeof buf - (size_t)n - 2, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof buf - 2) n = (int)sizeof buf - 2;
    buf[n++] = '}';
    buf[n++] = '\n';
    if (write(ev_fd, buf, (size_t)n) < 0) {
        /* nothing better to do: the event log is the only channel */
    }
}

/* ---- schedule ---------------------------------------------------------------- */

static double *sch_t, *sch_a, *sch_b;
static size_t sch_n;

static void schedule_load(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) die(path);
    size_t cap = 256;
    sch_t = malloc(cap * sizeof *sch_t);
    sch_a = malloc(cap * sizeof *sch_a);
    sch_b = malloc(cap * sizeof *sch_b);
    char line[256];
    while (fgets(line, sizeof line, f)) {
        double t, a, b = 0;
        int k = sscanf(line, "%lf %lf %lf", &t, &a, &b);
        if (k < 2) continue;
        if (sch_n == cap) {
            cap *= 2;
            sch_t = realloc(sch_t, cap * sizeof *sch_t);
            sch_a = realloc(sch_a, cap * sizeof *sch_a);
            sch_b = realloc(sch_b, cap * sizeof *sch_b);
        }
        sch_t[sch_n] = t;
        sch_a[sch_n] = a;
        sch_b[sch_n] = b;
        sch_n++;
    }
    fclose(f);
    if (sch_n == 0) {
        fprintf(stderr, "labwork: empty schedule %s\n", path);
        exit(2);
    }
}

/* Value of column `col` (0 = v1, 1 = v2) at time t (seconds since start). */
static double sched(double t, int col) {
    const double *v = col == 0 ? sch_a : sch_b;
    if (t <= sch_t[0]) return v[0];
    if (t >= sch_t[sch_n - 1]) return v[sch_n - 1];
    size_t lo = 0, hi = sch_n - 1;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (sch_t[mid] <= t) lo = mid; else hi = mid;
    }
    double span = sch_t[hi] - sch_t[lo];
    double f = span > 0 ? (t - sch_t[lo]) / span : 1.0;
    return v[lo] + f * (v[hi] - v[lo]);
}

static double sched_max(int col) {
    const double *v = col == 0 ? sch_a : sch_b;
    double m = v[0];
    for (size_t i = 1; i < sch_n; i++) if (v[i] > m) m = v[i];
    return m;
}

/* ---- helpers ----------------------------------------------------------------- */

static uint64_t rng_state = 88172645463325252ull;
static double rng_uniform(void) { /* xorshift64*, (0,1) */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    uint64_t r = rng_state * 2685821657736338717ull;
    return ((double)(r >> 11) + 0.5) / 9007199254740992.0;
}

static volatile uint64_t sink;
/* Burns `sec` seconds of this thread's CPU time (throttling stretches the wall time). */
static void burn_cpu(double sec) {
    if (sec <= 0) return;
    double end = thread_cpu_s() + sec;
    uint64_t x = sink + 1;
    while (thread_cpu_s() < end)
        for (int i = 0; i < 2000; i++) x = x * 6364136223846793005ull + 1442695040888963407ull;
    sink = x;
}

static void join_cgroups(void) {
    const char *spec = arg_s("join", NULL);
    if (!spec) return;
    char *copy = strdup(spec), *save = NULL;
    char pid[32];
    snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    for (char *p = strtok_r(copy, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        int fd = open(p, O_WRONLY);
        if (fd < 0 || write(fd, pid, strlen(pid)) < 0) die(p);
        close(fd);
    }
    free(copy);
}

/* Anonymous memory kept touched: one reservation, grown by writing pages, shrunk with
 * MADV_DONTNEED (pages go back to the kernel at once). */
static char *mem_region;
static size_t mem_cap, mem_touched;
static const size_t PAGE = 4096;

static void mem_init(size_t cap) {
    mem_cap = cap;
    mem_region = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem_region == MAP_FAILED) die("mmap");
    madvise(mem_region, cap, MADV_NOHUGEPAGE); /* page-exact accounting */
}

static void mem_set(double want) {
    if (want < 0) want = 0;
    size_t target = (size_t)want / PAGE * PAGE;
    if (target > mem_cap) target = mem_cap;
    if (target > mem_touched) {
        for (size_t p = mem_touched; p < target; p += PAGE) memset(mem_region + p, (int)(1 + (p >> 12) % 251), PAGE);
        mem_touched = target;
    } else if (target + 16 * PAGE < mem_touched) { /* hysteresis: no churn on tiny wobbles */
        madvise(mem_region + target, mem_touched - target, MADV_DONTNEED);
        mem_touched = target;
    }
}

/* ---- mode: mem --------------------------------------------------------------- */

static int mode_mem(double duration, double tick, double hb) {
    mem_init((size_t)(sched_max(0) * 1.05) + (64u << 20));
    double t0 = mono_s(), next = t0, next_hb = t0;
    emit("\"ev\":\"start\",\"mode\":\"mem\",\"pid\":%d", (int)getpid());
    for (;;) {
        double now = mono_s(), t = now - t0;
        if (t >= duration) break;
        mem_set(sched(t, 0));
        if (now >= next_hb) {
            emit("\"ev\":\"hb\",\"bytes\":%zu", mem_touched);
            next_hb += hb;
        }
        burn_cpu(sched(t, 1) * tick);
        next += tick;
        sleep_until_mono(next);
    }
    emit("\"ev\":\"end\",\"reason\":\"duration\",\"bytes\":%zu", mem_touched);
    return 0;
}

/* ---- mode: serve ------------------------------------------------------------- */

static volatile int hog_stop;
static double hog_t0;

static void *hog_main(void *arg) {
    (void)arg;
    const double slice = 0.01;
    double next = mono_s();
    while (!hog_stop) {
        double d = sched(mono_s() - hog_t0, 1);
        burn_cpu(d * slice);
        next += slice;
        double now = mono_s();
        if (next < now - 1.0) next = now; /* after long throttling do not try to catch up */
        if (d < 1.0) sleep_until_mono(next);
    }
    return NULL;
}

static int mode_serve(double duration, double hb) {
    double work = arg_d("work_ms", 5) / 1e3;
    const char *lat_path = arg_s("lat", NULL);
    FILE *lat = lat_path ? fopen(lat_path, "w") : NULL;
    if (lat_path && !lat) die(lat_path);
    if (lat) setvbuf(lat, NULL, _IOFBF, 1 << 16);
    mem_init((size_t)arg_d("base", 0) + (64u << 20));
    mem_set(arg_d("base", 0));

    /* Poisson arrivals with a time-varying rate by thinning at the schedule's maximum. */
    double lmax = sched_max(0);
    size_t qcap = 1 << 20, qh = 0, qt = 0;
    double *queue = malloc(qcap * sizeof *queue);
    double t0 = mono_s(), wall0 = wall_ms();
    hog_t0 = t0;
    pthread_t hog;
    int have_hog = sched_max(1) > 0;
    if (have_hog && pthread_create(&hog, NULL, hog_main, NULL) != 0) die("pthread_create");
    emit("\"ev\":\"start\",\"mode\":\"serve\",\"pid\":%d", (int)getpid());
    double next_arr = lmax > 0 ? -log(rng_uniform()) / lmax : 1e18;
    double next_hb = 0, next_flush = 1;
    unsigned long done = 0, dropped = 0;
    for (;;) {
        double t = mono_s() - t0;
        if (t >= duration) break;
        while (next_arr <= t) {
            if (rng_uniform() * lmax <= sched(next_arr, 0)) {
                if (qt - qh < qcap) queue[qt++ % qcap] = next_arr; else dropped++;
            }
            next_arr += -log(rng_uniform()) / lmax;
        }
        if (t >= next_hb) {
            emit("\"ev\":\"hb\",\"done\":%lu,\"queued\":%zu,\"dropped\":%lu", done, qt - qh, dropped);
            next_hb += hb;
        }
        if (lat && t >= next_flush) {
            fflush(lat);
            next_flush += 1;
        }
        if (qt > qh) {
            double arrival = queue[qh++ % qcap];
            burn_cpu(work);
            double end = mono_s() - t0;
            done++;
            if (lat) fprintf(lat, "%.0f %.1f\n", wall0 + end * 1e3, (end - arrival) * 1e3);
        } else {
            double wake = next_arr < duration ? next_arr : duration;
            double nh = next_hb < wake ? next_hb : wake;
            sleep_until_mono(t0 + nh);
        }
    }
    hog_stop = 1;
    if (have_hog) pthread_join(hog, NULL);
    if (lat) fclose(lat);
    emit("\"ev\":\"end\",\"reason\":\"duration\",\"done\":%lu,\"queued\":%zu,\"dropped\":%lu", done, qt - qh,
         dropped);
    return 0;
}

/* ---- mode: fork -------------------------------------------------------------- */

static int mode_fork(double duration, double tick, double hb) {
    double life = arg_d("life", -1);
    double t0 = mono_s(), next = t0, next_hb = t0, credit = 0;
    unsigned long forked = 0, failed = 0, live = 0;
    int first_eagain = 0;
    static pid_t kids[1 << 16];
    size_t nkids = 0;
    emit("\"ev\":\"start\",\"mode\":\"fork\",\"pid\":%d", (int)getpid());
    for (;;) {
        double now = mono_s(), t = now - t0;
        if (t >= duration) break;
        while (waitpid(-1, NULL, WNOHANG) > 0) live--;
        credit += sched(t, 0) * tick;
        while (credit >= 1) {
            credit -= 1;
            double stay = life >= 0 ? life : duration - t;
            pid_t pid = fork();
            if (pid == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                struct timespec ts = {(time_t)stay, (long)((stay - (double)(time_t)stay) * 1e9)};
                nanosleep(&ts, NULL);
                _exit(0);
            }
            if (pid > 0) {
                forked++;
                live++;
                if (nkids < sizeof kids / sizeof kids[0]) kids[nkids++] = pid;
            } else {
                int e = errno;
                failed++;
                if (e == EAGAIN && !first_eagain) {
                    first_eagain = 1;
                    emit("\"ev\":\"fork_fail\",\"errno\":\"EAGAIN\",\"first\":true,\"live\":%lu", live);
                } else if (failed % 50 == 1) {
                    emit("\"ev\":\"fork_fail\",\"errno\":\"%s\",\"first\":false,\"live\":%lu",
                         e == EAGAIN ? "EAGAIN" : strerror(e), live);
                }
                credit = 0; /* retry next tick, do not pile up */
                break;
            }
        }
        if (now >= next_hb) {
            emit("\"ev\":\"hb\",\"forked\":%lu,\"live\":%lu,\"failed\":%lu", forked, live, failed);
            next_hb += hb;
        }
        next += tick;
        sleep_until_mono(next);
    }
    for (size_t i = 0; i < nkids; i++) kill(kids[i], SIGKILL); /* exited ones are unreaped or gone */
    while (waitpid(-1, NULL, 0) > 0) {
    }
    emit("\"ev\":\"end\",\"reason\":\"duration\",\"forked\":%lu,\"failed\":%lu", forked, failed);
    return 0;
}

/* ---- mode: disk -------------------------------------------------------------- */

#define SEG_BYTES (8u << 20)
#define MAX_SEGS 4096

static int mode_disk(double duration, double tick, double hb) {
    const char *dir = arg_s("dir", NULL);
    if (!dir) {
        fprintf(stderr, "labwork: disk needs dir=\n");
        return 2;
    }
    double max_rate = arg_d("max_rate", 64 << 20);
    static char buf[1 << 16];
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (char)(i * 131 + 7);
    long seg_size[MAX_SEGS] = {0};
    int first = 0, last = -1, fd = -1; /* live segments first..last */
    double live = 0, since_sync = 0, t0 = mono_s(), next = t0, next_hb = t0;
    unsigned long enospc = 0;
    char path[4096];
    emit("\"ev\":\"start\",\"mode\":\"disk\",\"pid\":%d", (int)getpid());
    for (;;) {
        double now = mono_s(), t = now - t0;
        if (t >= duration) break;
        double want = sched(t, 0);
        /* rotation: delete oldest segments while over the wanted size */
        while (live > want + SEG_BYTES && first < last) {
            snprintf(path, sizeof path, "%s/seg-%06d.log", dir, first);
            unlink(path);
            live -= (double)seg_size[first % MAX_SEGS];
            first++;
        }
        double budget = max_rate * tick;
        while (live < want && budget > 0) {
            if (fd < 0 || seg_size[last % MAX_SEGS] >= (long)SEG_BYTES) {
                if (fd >= 0) close(fd);
                last++;
                seg_size[last % MAX_SEGS] = 0;
                snprintf(path, sizeof path, "%s/seg-%06d.log", dir, last);
                fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
                if (fd < 0) die(path);
            }
            size_t n = sizeof buf;
            if ((double)n > want - live) n = (size_t)(want - live) / 4096 * 4096 + 4096;
            ssize_t w = write(fd, buf, n);
            if (w < 0) {
                if (errno == ENOSPC) {
                    if (enospc++ == 0) emit("\"ev\":\"enospc\",\"first\":true,\"live\":%.0f", live);
                    break;
                }
                die("write");
            }
            live += (double)w;
            seg_size[last % MAX_SEGS] += w;
            budget -= (double)w;
            since_sync += (double)w;
            if (since_sync >= (4 << 20)) {
                fdatasync(fd);
                since_sync = 0;
            }
        }
        if (now >= next_hb) {
            emit("\"ev\":\"hb\",\"live\":%.0f,\"enospc\":%lu", live, enospc);
            next_hb += hb;
        }
        next += tick;
        sleep_until_mono(next);
    }
    if (fd >= 0) close(fd);
    emit("\"ev\":\"end\",\"reason\":\"duration\",\"live\":%.0f,\"enospc\":%lu", live, enospc);
    return 0;
}

/* ---- mode: cache ------------------------------------------------------------- */

static int mode_cache(double duration, double tick, double hb) {
    const char *file = arg_s("file", NULL);
    if (!file) {
        fprintf(stderr, "labwork: cache needs file=\n");
        return 2;
    }
    double size = arg_d("size", 64 << 20), wrate = arg_d("wrate", 16 << 20), rrate = arg_d("rrate", 16 << 20);
    mem_init((size_t)arg_d("base", 0) + (64u << 20));
    mem_set(arg_d("base", 0));
    static char buf[1 << 16];
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (char)(i * 17 + 3);
    int fd = open(file, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) die(file);
    double written = 0, pos = 0, since_sync = 0, t0 = mono_s(), next = t0, next_hb = t0;
    unsigned long passes = 0;
    emit("\"ev\":\"start\",\"mode\":\"cache\",\"pid\":%d", (int)getpid());
    for (;;) {
        double now = mono_s(), t = now - t0;
        if (t >= duration) break;
        if (written < size) {
            for (double b = wrate * tick; b > 0 && written < size; b -= sizeof buf) {
                ssize_t w = write(fd, buf, sizeof buf);
                if (w < 0) {
                    emit("\"ev\":\"write_error\",\"errno\":\"%s\"", strerror(errno));
                    written = size;
                    break;
                }
                written += (double)w;
                since_sync += (double)w;
                if (since_sync >= (4 << 20)) {
                    fdatasync(fd);
                    since_sync = 0;
                }
            }
        } else {
            for (double b = rrate * tick; b > 0; b -= sizeof buf) {
                ssize_t r = pread(fd, buf, sizeof buf, (off_t)pos);
                if (r <= 0) {
                    pos = 0;
                    passes++;
                    continue;
                }
                pos += (double)r;
            }
        }
        if (now >= next_hb) {
            emit("\"ev\":\"hb\",\"written\":%.0f,\"passes\":%lu", written, passes);
            next_hb += hb;
        }
        next += tick;
        sleep_until_mono(next);
    }
    close(fd);
    emit("\"ev\":\"end\",\"reason\":\"duration\",\"written\":%.0f,\"passes\":%lu", written, passes);
    return 0;
}

int main(int argc, char **argv) {
    g_argc = argc;
    g_argv = argv;
    if (argc < 2) {
        fprintf(stderr, "usage: labwork mem|serve|fork|disk|cache key=value...\n");
        return 2;
    }
    join_cgroups();
    const char *events = arg_s("events", NULL);
    if (events) {
        ev_fd = open(events, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (ev_fd < 0) die(events);
    }
    const char *schedule = arg_s("schedule", NULL);
    if (schedule) schedule_load(schedule);
    else {
        static double z[1] = {0};
        sch_t = z, sch_a = z, sch_b = z, sch_n = 1;
    }
    rng_state ^= (uint64_t)arg_d("seed", 1) * 0x9E3779B97F4A7C15ull;
    if (rng_state == 0) rng_state = 1;
    double duration = arg_d("duration", 60), tick = arg_d("tick", 100) / 1e3, hb = arg_d("hb", 1000) / 1e3;
    const char *mode = argv[1];
    if (!strcmp(mode, "mem")) return mode_mem(duration, tick, hb);
    if (!strcmp(mode, "serve")) return mode_serve(duration, hb);
    if (!strcmp(mode, "fork")) return mode_fork(duration, tick, hb);
    if (!strcmp(mode, "disk")) return mode_disk(duration, tick, hb);
    if (!strcmp(mode, "cache")) return mode_cache(duration, tick, hb);
    fprintf(stderr, "labwork: unknown mode %s\n", mode);
    return 2;
}
