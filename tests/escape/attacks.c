/*
 * attacks.c: container escape attempts for the containment suite (tests/tests/escape.rs).
 *
 * The test compiles this file statically (`gcc -static -O1`), pushes it into a busybox
 * container and runs `/attacks TECHNIQUE` once per technique as the container's root. Each
 * run prints exactly one line:
 *
 *     RESULT <technique> BLOCKED <why>   the kernel or a filter refused, or isolation made
 *                                        the host object unreachable
 *     RESULT <technique> ESCAPED <what>  the attempt reached a host object (or passed the
 *                                        permission check that guards one)
 *     RESULT <technique> ERROR <why>     the attempt could not be made (missing setup)
 *
 * No line at all (a crash, a timeout) is a failure of the suite, never a pass.
 *
 * SAFETY. Today's containers are privileged, so these attempts may really succeed, on a
 * developer's machine or in CI, as root. Every technique is written to observe, never to
 * act: files that would change the host (sysrq-trigger, core_pattern, modprobe,
 * release_agent, sysctls, devices of the host) are opened for writing and closed without a
 * byte written; syscalls that would change the host (kexec, module loading, reboot,
 * swapon, the clock) get arguments the kernel rejects right after its permission check, so
 * EPERM means blocked and the later error means the check was passed; block devices are
 * only read; mounts happen in a private mount namespace and are unmounted again. The only
 * writes are to the container's own cgroup (its limits and device list, which the host
 * then checks and which disappear with the container) and to its own hostname.
 *
 * Non-test modes (run by the test on the host): `--list`, `--host-key-add DESC PAYLOAD`,
 * `--host-key-remove SERIAL`, `--host-session-keyring`. With ESC_HOST_CONTROL=1 only the
 * pure syscall probes run (the test uses them as a control: does this kernel have the
 * feature at all?); without ESC_IN_CONTAINER=1 nothing else runs.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/klog.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/swap.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/timex.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/bpf.h>
#include <linux/keyctl.h>
#include <linux/magic.h>
#include <linux/nsfs.h>
#include <linux/perf_event.h>
#include <linux/reboot.h>

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif
#ifndef FILEID_KERNFS
#define FILEID_KERNFS 0xfe
#endif

/* ------------------------------------------------------------------ verdicts */

enum { NONE, BLOCKED, ESCAPED, ERROR };
static int verdict = NONE;
static char why[2048];

static int set_verdict(int v, const char *fmt, va_list ap)
{
    verdict = v;
    vsnprintf(why, sizeof why, fmt, ap);
    for (char *p = why; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    return v;
}

__attribute__((format(printf, 1, 2))) static int blocked(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_verdict(BLOCKED, fmt, ap);
    va_end(ap);
    return BLOCKED;
}

__attribute__((format(printf, 1, 2))) static int escaped(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_verdict(ESCAPED, fmt, ap);
    va_end(ap);
    return ESCAPED;
}

__attribute__((format(printf, 1, 2))) static int error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_verdict(ERROR, fmt, ap);
    va_end(ap);
    return ERROR;
}

/* Append to a note buffer. */
__attribute__((format(printf, 3, 4))) static void note(char *buf, size_t n, const char *fmt, ...)
{
    size_t len = strlen(buf);
    if (len >= n - 1)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + len, n - len, fmt, ap);
    va_end(ap);
}

/* An errno's name ("EPERM"), from a small ring so several fit in one printf. */
static const char *en(int e)
{
    static char ring[8][24];
    static int next;
    const char *s = strerrorname_np(e);
    char *b = ring[next++ % 8];
    snprintf(b, sizeof ring[0], "%s", s ? s : "E?");
    if (!s)
        snprintf(b, sizeof ring[0], "errno %d", e);
    return b;
}

static const char *env(const char *k)
{
    const char *v = getenv(k);
    return v ? v : "";
}

/* ------------------------------------------------------------------ helpers */

/* A scratch directory /tmp/ctl-esc-TAG (the host checks that no such mount leaks out). */
static const char *scratch(const char *tag)
{
    static char ring[4][128];
    static int next;
    char *p = ring[next++ % 4];
    mkdir("/tmp", 01777);
    snprintf(p, sizeof ring[0], "/tmp/ctl-esc-%s", tag);
    mkdir(p, 0700);
    return p;
}

static long fs_magic(int fd)
{
    struct statfs s;
    return fstatfs(fd, &s) == 0 ? (long)s.f_type : -1;
}

/*
 * Whether fd is the real kernel file on a filesystem of type `magic`, not a mask (a
 * character device such as /dev/null bound over it, or an empty file on another fs).
 */
static int is_real(int fd, long magic)
{
    struct stat st;
    if (fstat(fd, &st) != 0 || S_ISCHR(st.st_mode))
        return 0;
    return fs_magic(fd) == magic;
}

/* Open PATH for writing and close it at once, never writing. */
static int probe_write(const char *path, long magic, char *out, size_t n)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        note(out, n, "%s: %s%s", path, en(errno), errno == ENOENT ? " (absent)" : "");
        return 0;
    }
    int real = is_real(fd, magic);
    close(fd);
    if (!real) {
        note(out, n, "%s: opened, but it is a mask, not the kernel's file", path);
        return 0;
    }
    note(out, n, "opened %s for writing (nothing written)", path);
    return 1;
}

static int write_file(const char *path, const char *s)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t w = write(fd, s, strlen(s));
    int e = errno;
    close(fd);
    errno = e;
    return w == (ssize_t)strlen(s) ? 0 : -1;
}

static int read_file(const char *path, char *buf, size_t n)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t r = read(fd, buf, n - 1);
    int e = errno;
    close(fd);
    if (r < 0) {
        errno = e;
        return -1;
    }
    buf[r] = 0;
    while (r > 0 && (buf[r - 1] == '\n' || buf[r - 1] == ' '))
        buf[--r] = 0;
    return (int)r;
}

/* Whether the host's marker file is readable at PATH and holds the token. */
static int marker_at(const char *path)
{
    char buf[256];
    if (read_file(path, buf, sizeof buf) < 0)
        return 0;
    return *env("ESC_TOKEN") && strcmp(buf, env("ESC_TOKEN")) == 0;
}

/* Whether this process is in the initial user namespace (the host's). */
static int in_init_userns(void)
{
    char buf[256];
    if (read_file("/proc/self/uid_map", buf, sizeof buf) < 0)
        return 1;
    unsigned long a, b, c;
    return sscanf(buf, "%lu %lu %lu", &a, &b, &c) == 3 && a == 0 && b == 0 && c == 4294967295UL;
}

/* Work in a private mount namespace: whatever is mounted vanishes with this process. */
static void private_mounts(void)
{
    if (unshare(CLONE_NEWNS) == 0)
        mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
}

struct mnt {
    unsigned maj, min;
    char root[256];
    char point[256];
    char fstype[64];
    char super[1024];
};

static int read_mounts(struct mnt *out, int max)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return 0;
    char line[4096];
    int n = 0;
    while (n < max && fgets(line, sizeof line, f)) {
        struct mnt *m = &out[n];
        char *sep = strstr(line, " - ");
        if (!sep)
            continue;
        if (sscanf(line, "%*d %*d %u:%u %255s %255s", &m->maj, &m->min, m->root, m->point) != 4)
            continue;
        if (sscanf(sep + 3, "%63s %*s %1023s", m->fstype, m->super) < 1)
            continue;
        n++;
    }
    fclose(f);
    return n;
}

/* The cgroup path of this process in the v1 hierarchy holding CTRL ("memory",
 * "name=systemd"), with the hierarchy's mount options in OPTS; or the v2 path if CTRL is
 * "" . Returns 0 if there is no such hierarchy. */
static int cgroup_of(const char *ctrl, char *path, size_t pn, char *opts, size_t on)
{
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (!f)
        return 0;
    char line[1024];
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *a = strchr(line, ':');
        char *b = a ? strchr(a + 1, ':') : NULL;
        if (!b)
            continue;
        *b = 0;
        const char *ctrls = a + 1;
        if (*ctrl == 0) {
            found = *ctrls == 0;
        } else {
            char copy[256];
            snprintf(copy, sizeof copy, "%s", ctrls);
            for (char *s = strtok(copy, ","); s && !found; s = strtok(NULL, ","))
                found = strcmp(s, ctrl) == 0;
        }
        if (found) {
            snprintf(path, pn, "%s", b + 1);
            if (strncmp(ctrls, "name=", 5) == 0)
                snprintf(opts, on, "none,%s", ctrls);
            else
                snprintf(opts, on, "%s", ctrls);
        }
    }
    fclose(f);
    return found;
}

/* Mount a fresh instance of the cgroup hierarchy holding CTRL ("" for v2) on a scratch
 * dir. Returns the mount point and, in TARGET, the directory of the cgroup the container
 * sees as its root (the namespace root when this process sits at "/", else its own cgroup:
 * never an ancestor). */
static const char *mount_cgroup(const char *ctrl, const char *tag, char *target, size_t tn,
                                char *out, size_t on)
{
    char path[512], opts[256];
    if (!cgroup_of(ctrl, path, sizeof path, opts, sizeof opts)) {
        note(out, on, "no %s hierarchy", *ctrl ? ctrl : "cgroup2");
        return NULL;
    }
    const char *dir = scratch(tag);
    int r = *ctrl ? mount("cgroup", dir, "cgroup", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts)
                  : mount("cgroup2", dir, "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    if (r != 0) {
        note(out, on, "mount a fresh %s hierarchy: %s", *ctrl ? opts : "cgroup2", en(errno));
        return NULL;
    }
    snprintf(target, tn, "%s%s", dir, strcmp(path, "/") == 0 ? "" : path);
    return dir;
}

/* ------------------------------------------------------------------ /proc and /sys */

static int t_sysrq_trigger(void)
{
    char out[512] = "";
    if (probe_write("/proc/sysrq-trigger", PROC_SUPER_MAGIC, out, sizeof out))
        return escaped("%s", out);
    return blocked("%s", out);
}

static int t_core_pattern(void)
{
    char out[512] = "";
    if (probe_write("/proc/sys/kernel/core_pattern", PROC_SUPER_MAGIC, out, sizeof out))
        return escaped("%s: a core dump would run a host program as root", out);
    return blocked("%s", out);
}

static int t_modprobe_path(void)
{
    char out[512] = "";
    if (probe_write("/proc/sys/kernel/modprobe", PROC_SUPER_MAGIC, out, sizeof out))
        return escaped("%s", out);
    return blocked("%s", out);
}

/* Host-wide sysctls; only ever opened for writing, never written. */
static const char *const host_sysctls[] = {
    "kernel/core_pattern", "kernel/modprobe", "vm/drop_caches", "kernel/panic", NULL,
};

static int t_proc_sys_remount(void)
{
    private_mounts();
    const unsigned long keep = MS_NOSUID | MS_NODEV | MS_NOEXEC;
    if (mount(NULL, "/proc/sys", NULL, MS_REMOUNT | MS_BIND | keep, NULL) != 0)
        return blocked("remount /proc/sys read-write: %s", en(errno));
    char out[1024] = "remounted /proc/sys read-write; ";
    int hit = 0;
    for (int i = 0; host_sysctls[i] && !hit; i++) {
        char p[256];
        snprintf(p, sizeof p, "/proc/sys/%s", host_sysctls[i]);
        hit = probe_write(p, PROC_SUPER_MAGIC, out, sizeof out);
        note(out, sizeof out, "; ");
    }
    mount(NULL, "/proc/sys", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | keep, NULL);
    return hit ? escaped("%s", out) : blocked("%s", out);
}

/* Host-wide sysfs knobs; only ever opened for writing, never written. */
static const char *const host_sysfs[] = {
    "/sys/kernel/mm/transparent_hugepage/enabled",
    "/sys/kernel/mm/ksm/run",
    "/sys/kernel/rcu_expedited",
    "/sys/kernel/uevent_helper",
    NULL,
};

static int t_sys_remount(void)
{
    private_mounts();
    const unsigned long keep = MS_NOSUID | MS_NODEV | MS_NOEXEC;
    struct stat st;
    if (stat("/sys", &st) != 0)
        return blocked("/sys: %s", en(errno));
    /* Never change the superblock of the host's own sysfs (it would affect the host's
     * /sys); only this container's (its network namespace has its own). */
    const char *host_dev = env("ESC_HOST_SYS_DEV");
    if (!*host_dev)
        return error("ESC_HOST_SYS_DEV not set");
    int shared = (unsigned long long)st.st_dev == strtoull(host_dev, NULL, 10);
    if (mount(NULL, "/sys", NULL, MS_REMOUNT | MS_BIND | keep, NULL) != 0)
        return blocked("remount /sys read-write: %s", en(errno));
    char out[1024] = "";
    int sb_changed = 0;
    struct statfs sf;
    if (statfs("/sys", &sf) == 0 && (sf.f_flags & ST_RDONLY)) {
        if (shared) {
            note(out, sizeof out, "the sysfs superblock is the host's (left alone); ");
        } else if (mount(NULL, "/sys", NULL, MS_REMOUNT | keep, NULL) == 0) {
            sb_changed = 1;
        } else {
            note(out, sizeof out, "remount the sysfs superblock read-write: %s; ", en(errno));
        }
    }
    note(out, sizeof out, "remounted /sys read-write; ");
    int hit = 0;
    for (int i = 0; host_sysfs[i] && !hit; i++) {
        hit = probe_write(host_sysfs[i], SYSFS_MAGIC, out, sizeof out);
        note(out, sizeof out, "; ");
    }
    if (sb_changed)
        mount(NULL, "/sys", NULL, MS_REMOUNT | MS_RDONLY | keep, NULL);
    mount(NULL, "/sys", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | keep, NULL);
    return hit ? escaped("%s", out) : blocked("%s", out);
}

static int t_fresh_proc(void)
{
    private_mounts();
    const char *dir = scratch("proc");
    if (mount("proc", dir, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0)
        return blocked("mount a fresh proc: %s", en(errno));
    static const char *const files[] = {
        "sys/kernel/core_pattern", "sysrq-trigger", "sys/kernel/modprobe", "sys/vm/drop_caches", NULL,
    };
    char out[1024] = "mounted a fresh proc; ";
    int hit = 0;
    for (int i = 0; files[i] && !hit; i++) {
        char p[256];
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        hit = probe_write(p, PROC_SUPER_MAGIC, out, sizeof out);
        note(out, sizeof out, "; ");
    }
    umount2(dir, MNT_DETACH);
    return hit ? escaped("%s", out) : blocked("%s", out);
}

static int t_proc_kcore(void)
{
    int fd = open("/proc/kcore", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return blocked("open /proc/kcore: %s%s", en(errno), errno == ENOENT ? " (absent)" : "");
    char b[4] = {0};
    ssize_t r = read(fd, b, 4);
    int e = errno, real = is_real(fd, PROC_SUPER_MAGIC);
    close(fd);
    if (r == 4 && memcmp(b, "\177ELF", 4) == 0 && real)
        return escaped("read the ELF header of /proc/kcore (host kernel memory)");
    return blocked("/proc/kcore: %s", r < 0 ? en(e) : "masked (no ELF header)");
}

static int t_proc_kallsyms(void)
{
    FILE *f = fopen("/proc/kallsyms", "re");
    if (!f)
        return blocked("open /proc/kallsyms: %s", en(errno));
    char line[512];
    int lines = 0;
    while (lines < 2000 && fgets(line, sizeof line, f)) {
        lines++;
        unsigned long long a = strtoull(line, NULL, 16);
        if (a != 0) {
            fclose(f);
            line[strcspn(line, "\n")] = 0;
            return escaped("/proc/kallsyms shows host kernel addresses (%s)", line);
        }
    }
    fclose(f);
    return blocked("/proc/kallsyms: %d lines, every address 0 (kptr_restrict)", lines);
}

static int t_proc_kmsg(void)
{
    /* Opening only: reading /proc/kmsg would consume the host's kernel log. */
    int fd = open("/proc/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return blocked("open /proc/kmsg: %s", en(errno));
    int real = is_real(fd, PROC_SUPER_MAGIC);
    close(fd);
    if (!real)
        return blocked("/proc/kmsg is masked");
    return escaped("opened /proc/kmsg (CAP_SYSLOG): reading it drains the host's kernel log");
}

static int t_proc_kpageflags(void)
{
    int fd = open("/proc/kpageflags", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return blocked("open /proc/kpageflags: %s", en(errno));
    uint64_t v;
    ssize_t r = pread(fd, &v, sizeof v, 0);
    int e = errno, real = is_real(fd, PROC_SUPER_MAGIC);
    close(fd);
    if (r == sizeof v && real)
        return escaped("read host physical page flags from /proc/kpageflags");
    return blocked("/proc/kpageflags: %s", r < 0 ? en(e) : "masked");
}

static int t_syslog_read(void)
{
    static char buf[1 << 16];
    int n = klogctl(3 /* SYSLOG_ACTION_READ_ALL: non-destructive */, buf, sizeof buf);
    if (n < 0)
        return blocked("syslog(READ_ALL): %s", en(errno));
    if (n == 0)
        return blocked("syslog(READ_ALL): empty");
    char r[256];
    read_file("/proc/sys/kernel/dmesg_restrict", r, sizeof r);
    return escaped("read %d bytes of the host kernel log (kernel.dmesg_restrict=%s)", n, r);
}

/* ------------------------------------------------------------------ privileged syscalls */

/* EPERM/EACCES: refused by a capability check or an LSM; ENOSYS: no such syscall here
 * (seccomp or the kernel; the host control tells which). */
static int refused(int e)
{
    return e == EPERM || e == EACCES || e == ENOSYS;
}

static int t_kexec_load(void)
{
    /* Invalid architecture bits: EINVAL right after the CAP_SYS_BOOT check, nothing loaded
     * (nr_segments=0 with valid flags would unload the crash kernel). */
    long r = syscall(SYS_kexec_load, 0UL, 0UL, NULL, 0xdead0000UL);
    int e = errno;
    if (r == 0)
        return escaped("kexec_load returned 0");
    if (refused(e))
        return blocked("kexec_load: %s", en(e));
    return escaped("kexec_load passed the CAP_SYS_BOOT check (%s for invalid flags): could replace the host kernel", en(e));
}

static int t_kexec_file_load(void)
{
    long r = syscall(SYS_kexec_file_load, -1, -1, 0UL, NULL, 0xdead0000UL);
    int e = errno;
    if (r == 0)
        return escaped("kexec_file_load returned 0");
    if (refused(e))
        return blocked("kexec_file_load: %s", en(e));
    return escaped("kexec_file_load passed the CAP_SYS_BOOT check (%s for invalid flags)", en(e));
}

static int t_init_module(void)
{
    static char image[16]; /* shorter than an ELF header: ENOEXEC after the check */
    long r = syscall(SYS_init_module, image, sizeof image, "");
    int e = errno;
    if (r == 0)
        return escaped("init_module returned 0");
    if (refused(e))
        return blocked("init_module: %s", en(e));
    return escaped("init_module passed the CAP_SYS_MODULE check (%s for a 16-byte image)", en(e));
}

static int t_finit_module(void)
{
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return error("open /dev/null: %s", en(errno));
    long r = syscall(SYS_finit_module, fd, "", 0);
    int e = errno;
    close(fd);
    if (r == 0)
        return escaped("finit_module returned 0");
    if (refused(e))
        return blocked("finit_module: %s", en(e));
    return escaped("finit_module passed the CAP_SYS_MODULE check (%s for /dev/null)", en(e));
}

static int t_delete_module(void)
{
    long r = syscall(SYS_delete_module, "ctl_escape_no_such_module", O_NONBLOCK);
    int e = errno;
    if (r == 0)
        return escaped("delete_module returned 0");
    if (refused(e))
        return blocked("delete_module: %s", en(e));
    return escaped("delete_module passed the CAP_SYS_MODULE check (%s for a missing module)", en(e));
}

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

static int t_shocker(void)
{
    char out[1536] = "";
    if (shock_cgroup_roots(out, sizeof out, 0))
        return escaped("open_by_handle_at:%s", out);
    /* ext2/3/4 mounts of host disks: inode 2 is the filesystem's root. */
    struct mnt m[128];
    int count = read_mounts(m, 128);
    for (int i = 0; i < count; i++) {
        if (strncmp(m[i].fstype, "ext", 3))
            continue;
        int mfd = open(m[i].point, O_RDONLY | O_CLOEXEC);
        if (mfd < 0)
            continue;
        struct {
            struct file_handle h;
            uint32_t ino_gen[2];
        } fh = {{.handle_bytes = 8, .handle_type = 1 /* FILEID_INO32_GEN */}, {2, 0}};
        int fd = open_by_handle_at(mfd, &fh.h, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        struct stat pst;
        int outside = stat(m[i].point, &pst) == 0 && pst.st_ino != 2;
        close(mfd);
        if (fd >= 0 && outside) {
            close(fd);
            return escaped("open_by_handle_at: opened the root of the host filesystem under %s (%s) by inode 2",
                           m[i].point, m[i].fstype);
        }
        note(out, sizeof out, " %s (%s) inode 2: %s;", m[i].point, m[i].fstype,
             fd >= 0 ? "opened, but it is in view" : en(errno));
        if (fd >= 0)
            close(fd);
    }
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

static int t_umount_force(void)
{
    private_mounts();
    const char *dir = scratch("umount");
    /* Only ever a tmpfs of our own (tmpfs has no umount_begin): MNT_FORCE on a shared
     * FUSE or NFS mount, such as lxcfs, would abort it for the whole host. */
    if (mount("none", dir, "tmpfs", 0, "size=16k") != 0)
        return blocked("mount a tmpfs to force-unmount: %s", en(errno));
    if (umount2(dir, MNT_FORCE) == 0)
        return escaped("umount2(MNT_FORCE) allowed (on a shared FUSE mount such as lxcfs it aborts the host's connection)");
    int e = errno;
    umount2(dir, MNT_DETACH);
    if (refused(e))
        return blocked("umount2(MNT_FORCE): %s", en(e));
    return escaped("umount2(MNT_FORCE) got past the permission check (%s)", en(e));
}

static int t_keyctl_host_key(void)
{
    const char *desc = env("ESC_KEY_DESC");
    if (!*desc)
        return error("ESC_KEY_DESC not set");
    long k = syscall(SYS_keyctl, KEYCTL_SEARCH, KEY_SPEC_USER_KEYRING, "user", desc, 0);
    if (k < 0) {
        int e = errno;
        char keys[1 << 14] = "";
        if (read_file("/proc/keys", keys, sizeof keys) > 0 && strstr(keys, desc))
            return escaped("the host's key %s is listed in /proc/keys (search: %s)", desc, en(e));
        return blocked("search the user keyring for the host's key: %s%s", en(e),
                       e == ENOKEY ? " (a keyring of its own)" : "");
    }
    char buf[256] = "";
    long n = syscall(SYS_keyctl, KEYCTL_READ, k, buf, sizeof buf - 1);
    if (n > 0 && n < (long)sizeof buf) {
        buf[n] = 0;
        if (strcmp(buf, env("ESC_TOKEN")) == 0)
            return escaped("found the host's key %ld in root's user keyring and read its payload", k);
    }
    return escaped("found the host's key %ld in root's user keyring (read: %s)", k, n < 0 ? en(errno) : "other payload");
}

static int t_keyctl_session(void)
{
    const char *host = env("ESC_HOST_SESSION");
    if (!*host)
        return error("ESC_HOST_SESSION not set");
    long s = syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0);
    if (s < 0)
        return blocked("get the session keyring: %s", en(errno));
    if (s == strtol(host, NULL, 10))
        return escaped("the session keyring is the host's (%ld): the daemon's keys are in reach", s);
    return blocked("session keyring %ld is not the host's (%s)", s, host);
}

static int t_bpf_prog_load(void)
{
    struct bpf_insn insns[2] = {
        {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = 0},
        {.code = BPF_JMP | BPF_EXIT},
    };
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
    a.insns = (uint64_t)(uintptr_t)insns;
    a.insn_cnt = 2;
    a.license = (uint64_t)(uintptr_t) "GPL";
    long fd = syscall(SYS_bpf, BPF_PROG_LOAD, &a, sizeof a);
    if (fd < 0)
        return blocked("bpf(BPF_PROG_LOAD): %s", en(errno));
    close((int)fd);
    char r[64] = "?";
    read_file("/proc/sys/kernel/unprivileged_bpf_disabled", r, sizeof r);
    return escaped("loaded a BPF socket filter (kernel.unprivileged_bpf_disabled=%s)", r);
}

static int t_perf_event_open(void)
{
    struct perf_event_attr pa;
    memset(&pa, 0, sizeof pa);
    pa.type = PERF_TYPE_SOFTWARE;
    pa.size = sizeof pa;
    pa.config = PERF_COUNT_SW_CPU_CLOCK;
    pa.disabled = 1;
    long fd = syscall(SYS_perf_event_open, &pa, -1, 0, -1, 0);
    if (fd < 0)
        return blocked("perf_event_open(pid=-1, cpu=0): %s", en(errno));
    close((int)fd);
    return escaped("opened a system-wide perf event on CPU 0 (sees every host process)");
}

static int t_userfaultfd(void)
{
    long fd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return blocked("userfaultfd (kernel faults too): %s", en(errno));
    close((int)fd);
    return escaped("got a userfaultfd that handles kernel faults (an exploit primitive, not a host object)");
}

static int t_reboot(void)
{
    long r = syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, 0xdeadbeefU, NULL);
    int e = errno;
    if (r == 0)
        return escaped("reboot(2) with an invalid command returned 0");
    if (refused(e))
        return blocked("reboot: %s", en(e));
    /* Past the capability check. In a child PID namespace reboot(2) only ends the
     * namespace's init; in the host's it would reboot the machine. */
    int child = getppid() == 0;
    int fd = open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        int parent = ioctl(fd, NS_GET_PARENT);
        if (parent >= 0) {
            child = 1;
            close(parent);
        }
        close(fd);
    }
    if (child)
        return blocked("reboot: %s; in a child PID namespace it only stops this container", en(e));
    return escaped("reboot passed the CAP_SYS_BOOT check (%s) in what looks like the host's PID namespace", en(e));
}

static int t_swapon(void)
{
    if (swapon("/ctl-escape-no-such-swapfile", 0) == 0)
        return escaped("swapon returned 0");
    int e = errno;
    if (refused(e))
        return blocked("swapon: %s", en(e));
    return escaped("swapon passed the CAP_SYS_ADMIN check (%s for a missing file): could add host swap", en(e));
}

static int t_set_clock(void)
{
    /* ADJ_TICK with an out-of-range tick: EINVAL right after the CAP_SYS_TIME check. */
    struct timex tx;
    memset(&tx, 0, sizeof tx);
    tx.modes = ADJ_TICK;
    tx.tick = 1;
    if (adjtimex(&tx) >= 0)
        return escaped("adjtimex(ADJ_TICK) returned success");
    int e = errno;
    if (refused(e))
        return blocked("adjtimex(ADJ_TICK): %s", en(e));
    return escaped("adjtimex passed the CAP_SYS_TIME check (%s for an invalid tick): could set the host clock", en(e));
}

static int t_iopl_ioperm(void)
{
#if defined(SYS_iopl) && defined(SYS_ioperm)
    if (syscall(SYS_iopl, 3) == 0) {
        syscall(SYS_iopl, 0);
        return escaped("iopl(3) allowed: raw access to host I/O ports");
    }
    int e1 = errno;
    if (syscall(SYS_ioperm, 0x80UL, 1UL, 1) == 0) {
        syscall(SYS_ioperm, 0x80UL, 1UL, 0);
        return escaped("ioperm(0x80) allowed: raw access to a host I/O port");
    }
    return blocked("iopl: %s, ioperm: %s", en(e1), en(errno));
#else
    return blocked("no iopl/ioperm on this architecture");
#endif
}

/* ------------------------------------------------------------------ devices */

/* Open the device MAJ:MIN (its /dev node if there is one, else a fresh node). Returns the
 * fd or -1 with the story in OUT. */
static int open_device(const char *devpath, int type, unsigned maj, unsigned min, int flags,
                       char *out, size_t n)
{
    int fd = devpath ? open(devpath, flags | O_CLOEXEC) : -1;
    if (fd >= 0)
        return fd;
    if (devpath)
        note(out, n, "%s: %s; ", devpath, en(errno));
    char node[128];
    snprintf(node, sizeof node, "%s/node-%u-%u", scratch("dev"), maj, min);
    unlink(node);
    if (mknod(node, type | 0600, makedev(maj, min)) != 0) {
        note(out, n, "mknod %c %u:%u: %s", type == S_IFBLK ? 'b' : 'c', maj, min, en(errno));
        return -1;
    }
    fd = open(node, flags | O_CLOEXEC);
    if (fd < 0)
        note(out, n, "mknod %c %u:%u ok, open: %s", type == S_IFBLK ? 'b' : 'c', maj, min, en(errno));
    unlink(node);
    return fd;
}

static int t_dev_mem(void)
{
    char out[512] = "";
    static const struct {
        const char *path;
        unsigned min;
    } devs[] = {{"/dev/mem", 1}, {"/dev/port", 4}};
    for (int i = 0; i < 2; i++) {
        int fd = open_device(devs[i].path, S_IFCHR, 1, devs[i].min, O_RDONLY, out, sizeof out);
        if (fd >= 0) {
            close(fd);
            return escaped("opened %s (c 1:%u) for reading (nothing read): host physical memory/ports",
                           devs[i].path, devs[i].min);
        }
        note(out, sizeof out, "; ");
    }
    return blocked("%s", out);
}

static int t_mknod_host_disk(void)
{
    unsigned maj, min;
    if (sscanf(env("ESC_DISK"), "%u:%u", &maj, &min) != 2)
        return error("ESC_DISK not set");
    char out[512] = "";
    int fd = open_device(NULL, S_IFBLK, maj, min, O_RDONLY, out, sizeof out);
    if (fd < 0)
        return blocked("host disk: %s", out);
    char buf[512];
    ssize_t r = pread(fd, buf, sizeof buf, 0);
    int e = errno;
    close(fd);
    if (r == (ssize_t)sizeof buf)
        return escaped("read the first 512 bytes of the host disk b %u:%u (opened read-only)", maj, min);
    return escaped("opened the host disk b %u:%u read-only (read: %s)", maj, min, r < 0 ? en(e) : "short");
}

static int t_mknod_kmsg(void)
{
    char out[512] = "";
    int fd = open_device("/dev/kmsg", S_IFCHR, 1, 11, O_RDONLY | O_NONBLOCK, out, sizeof out);
    if (fd < 0)
        return blocked("%s", out);
    char buf[1024];
    ssize_t r = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (r > 0)
        return escaped("read a host kernel log record through /dev/kmsg (c 1:11)");
    return escaped("opened /dev/kmsg (c 1:11) for reading");
}

/* ------------------------------------------------------------------ mounts */

/* Filesystems with a single, host-wide instance (or, for bpf, created with the host's
 * privileges). Mounting one is the escape; it is unmounted at once. binfmt_misc (since
 * 6.7) and bpf (since 6.9) may be mounted inside a user namespace, where they are that
 * namespace's own, empty instance: not an escape. */
static int mount_pseudo(const char *fstype)
{
    private_mounts();
    const char *dir = scratch(fstype);
    if (mount(fstype, dir, fstype, MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0) {
        int e = errno;
        return blocked("mount -t %s: %s%s", fstype, en(e), e == ENODEV ? " (not in this kernel)" : "");
    }
    char list[256] = "";
    int entries = 0;
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        if (entries++ < 4)
            note(list, sizeof list, "%s ", e->d_name);
    }
    if (d)
        closedir(d);
    umount2(dir, MNT_DETACH);
    if (!in_init_userns() && (!strcmp(fstype, "binfmt_misc") || !strcmp(fstype, "bpf")))
        return blocked("mounted %s, but it is this user namespace's own instance (%d entries)", fstype, entries);
    return escaped("mounted the host's %s with host privileges (%d entries: %s)", fstype, entries, list);
}

static int t_mount_debugfs(void) { return mount_pseudo("debugfs"); }
static int t_mount_tracefs(void) { return mount_pseudo("tracefs"); }
static int t_mount_securityfs(void) { return mount_pseudo("securityfs"); }
static int t_mount_pstore(void) { return mount_pseudo("pstore"); }
static int t_mount_binfmt_misc(void) { return mount_pseudo("binfmt_misc"); }
static int t_mount_bpffs(void) { return mount_pseudo("bpf"); }
static int t_mount_devtmpfs(void) { return mount_pseudo("devtmpfs"); }
static int t_mount_fusectl(void) { return mount_pseudo("fusectl"); }

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

static int t_unshare_userns(void)
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

static int t_chroot_escape(void)
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

static int t_host_process(void)
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

static int t_proc_pid_root(void)
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
static int t_leaked_fd_cwd(void)
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

static int t_setns_foreign(void)
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
static int t_exec_host_exe(void)
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
            if (fd < 0)
                continue;
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

static int t_abstract_socket(void)
{
    if (!*env("ESC_ABSTRACT"))
        return error("ESC_ABSTRACT not set");
    if (abstract_connect() == 0)
        return escaped("connected to the host's abstract unix socket @%s", env("ESC_ABSTRACT"));
    return blocked("connect to the host's abstract socket: %s (own network namespace)", en(errno));
}

static int t_sethostname(void)
{
    char old[128] = "", name[64];
    gethostname(old, sizeof old);
    const char *token = env("ESC_TOKEN");
    size_t len = strlen(token);
    snprintf(name, sizeof name, "esc-%s", len > 40 ? token + len - 40 : token);
    if (sethostname(name, strlen(name)) != 0)
        return blocked("sethostname: %s", en(errno));
    sethostname(old, strlen(old));
    /* The host checks its own hostname afterwards and overrides this if it changed. */
    return blocked("changed the hostname of this UTS namespace only (restored; the host checks its own)");
}

static int t_image_layer(void)
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

static int t_cgroup_release_agent(void)
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
    return escaped("raised its own %s from %s to %s through a fresh cgroup mount", v1 ? v1_file : v2_file, old, now);
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

static int t_cgroup_memory_raise(void)
{
    return raise_limit("memory", "memory.limit_in_bytes", "memory.max", double_memory);
}

static int t_cgroup_pids_raise(void)
{
    return raise_limit("pids", "pids.max", "pids.max", unlimited_pids);
}

static int t_cgroup_devices_allow(void)
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

/* ------------------------------------------------------------------ table */

struct technique {
    const char *name;
    int (*run)(void);
    /* A pure syscall probe that the test may also run on the host, as a control. */
    int host_control;
};

static const struct technique techniques[] = {
    {"sysrq_trigger", t_sysrq_trigger, 0},
    {"core_pattern", t_core_pattern, 0},
    {"modprobe_path", t_modprobe_path, 0},
    {"proc_sys_remount", t_proc_sys_remount, 0},
    {"sys_remount", t_sys_remount, 0},
    {"fresh_proc", t_fresh_proc, 0},
    {"proc_kcore", t_proc_kcore, 0},
    {"proc_kallsyms", t_proc_kallsyms, 0},
    {"proc_kmsg", t_proc_kmsg, 0},
    {"proc_kpageflags", t_proc_kpageflags, 0},
    {"syslog_read", t_syslog_read, 0},
    {"kexec_load", t_kexec_load, 1},
    {"kexec_file_load", t_kexec_file_load, 1},
    {"init_module", t_init_module, 1},
    {"finit_module", t_finit_module, 1},
    {"delete_module", t_delete_module, 1},
    {"shocker", t_shocker, 0},
    {"umount_force", t_umount_force, 0},
    {"keyctl_host_key", t_keyctl_host_key, 0},
    {"keyctl_session", t_keyctl_session, 0},
    {"bpf_prog_load", t_bpf_prog_load, 1},
    {"perf_event_open", t_perf_event_open, 1},
    {"userfaultfd", t_userfaultfd, 1},
    {"reboot", t_reboot, 0},
    {"swapon", t_swapon, 1},
    {"set_clock", t_set_clock, 0},
    {"iopl_ioperm", t_iopl_ioperm, 1},
    {"dev_mem", t_dev_mem, 0},
    {"mknod_host_disk", t_mknod_host_disk, 0},
    {"mknod_kmsg", t_mknod_kmsg, 0},
    {"mount_debugfs", t_mount_debugfs, 0},
    {"mount_tracefs", t_mount_tracefs, 0},
    {"mount_securityfs", t_mount_securityfs, 0},
    {"mount_pstore", t_mount_pstore, 0},
    {"mount_binfmt_misc", t_mount_binfmt_misc, 0},
    {"mount_bpffs", t_mount_bpffs, 0},
    {"mount_devtmpfs", t_mount_devtmpfs, 0},
    {"mount_fusectl", t_mount_fusectl, 0},
    {"unshare_userns", t_unshare_userns, 0},
    {"chroot_escape", t_chroot_escape, 0},
    {"host_process", t_host_process, 0},
    {"proc_pid_root", t_proc_pid_root, 0},
    {"leaked_fd_cwd", t_leaked_fd_cwd, 0},
    {"setns_foreign", t_setns_foreign, 0},
    {"exec_host_exe", t_exec_host_exe, 0},
    {"abstract_socket", t_abstract_socket, 0},
    {"sethostname", t_sethostname, 0},
    {"image_layer", t_image_layer, 0},
    /* Last: these change the container's own cgroup (its device list afterwards allows
     * everything, which would skew the device techniques above). */
    {"cgroup_release_agent", t_cgroup_release_agent, 0},
    {"cgroup_memory_raise", t_cgroup_memory_raise, 0},
    {"cgroup_pids_raise", t_cgroup_pids_raise, 0},
    {"cgroup_devices_allow", t_cgroup_devices_allow, 0},
    {NULL, NULL, 0},
};

/* ------------------------------------------------------------------ host helpers */

static int host_key_add(const char *desc, const char *payload)
{
    long k = syscall(SYS_add_key, "user", desc, payload, strlen(payload), KEY_SPEC_USER_KEYRING);
    if (k < 0) {
        fprintf(stderr, "add_key: %s\n", strerror(errno));
        return 1;
    }
    /* The host itself must find it the way the container will look for it. */
    long s = syscall(SYS_keyctl, KEYCTL_SEARCH, KEY_SPEC_USER_KEYRING, "user", desc, 0);
    if (s != k) {
        fprintf(stderr, "keyctl search after add_key: %s\n", s < 0 ? strerror(errno) : "another key");
        syscall(SYS_keyctl, KEYCTL_INVALIDATE, k);
        return 1;
    }
    printf("%ld\n", k);
    return 0;
}

static int host_key_remove(const char *serial)
{
    /* Invalidate while it is still linked to (and so possessed through) root's user
     * keyring; unlinking drops the last reference if that fails. */
    long k = strtol(serial, NULL, 10);
    int inv = syscall(SYS_keyctl, KEYCTL_INVALIDATE, k) == 0 ? 0 : errno;
    int unl = syscall(SYS_keyctl, KEYCTL_UNLINK, k, KEY_SPEC_USER_KEYRING) == 0 ? 0 : errno;
    if (inv && unl) {
        fprintf(stderr, "remove key %ld: invalidate %s, unlink %s\n", k, strerror(inv), strerror(unl));
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 2 && !strcmp(argv[1], "--list")) {
        for (const struct technique *t = techniques; t->name; t++)
            printf("%s %s\n", t->name, t->host_control ? "host-control" : "container-only");
        return 0;
    }
    if (argc == 4 && !strcmp(argv[1], "--host-key-add"))
        return host_key_add(argv[2], argv[3]);
    if (argc == 3 && !strcmp(argv[1], "--host-key-remove"))
        return host_key_remove(argv[2]);
    if (argc == 2 && !strcmp(argv[1], "--host-session-keyring")) {
        long s = syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0);
        printf("%ld\n", s);
        return s < 0;
    }
    if (argc != 2) {
        fprintf(stderr, "usage: %s TECHNIQUE | --list\n", argv[0]);
        return 2;
    }
    const struct technique *t = techniques;
    while (t->name && strcmp(t->name, argv[1]))
        t++;
    if (!t->name) {
        printf("RESULT %s ERROR unknown technique\n", argv[1]);
        return 2;
    }
    int control = !strcmp(env("ESC_HOST_CONTROL"), "1");
    if (control ? !t->host_control : strcmp(env("ESC_IN_CONTAINER"), "1") != 0) {
        printf("RESULT %s ERROR refused: %s\n", t->name,
               control ? "not a pure probe, never run on the host" : "ESC_IN_CONTAINER=1 not set");
        return 2;
    }
    /* A technique that hangs dies here and prints nothing: the suite counts that as a
     * failure. */
    long ms = atol(env("ESC_RACE_MS"));
    alarm(20 + (unsigned)(ms > 0 ? ms / 1000 : 8));
    t->run();
    static const char *const names[] = {"NONE", "BLOCKED", "ESCAPED", "ERROR"};
    if (verdict == NONE)
        return 3;
    printf("RESULT %s %s %s\n", t->name, names[verdict], why);
    return 0;
}
