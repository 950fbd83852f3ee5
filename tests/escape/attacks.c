/*
 * attacks.c: container escape attempts for the containment suite (tests/tests/escape.rs):
 * the verdicts, shared helpers, the technique table and main. The techniques are in kernel.c
 * and isolation.c.
 *
 * The test compiles attacks.c, kernel.c and isolation.c into one static program (`gcc
 * -static -O1`), pushes it into a busybox container and runs `/attacks TECHNIQUE` once per
 * technique as the container's root. Each run prints exactly one line:
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
#include "attacks.h"

/* ------------------------------------------------------------------ verdicts */

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

int blocked(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_verdict(BLOCKED, fmt, ap);
    va_end(ap);
    return BLOCKED;
}

int escaped(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_verdict(ESCAPED, fmt, ap);
    va_end(ap);
    return ESCAPED;
}

int error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_verdict(ERROR, fmt, ap);
    va_end(ap);
    return ERROR;
}

/* Append to a note buffer. */
void note(char *buf, size_t n, const char *fmt, ...)
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
const char *en(int e)
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

const char *env(const char *k)
{
    const char *v = getenv(k);
    return v ? v : "";
}

/* ------------------------------------------------------------------ helpers */

/* A scratch directory /tmp/ctl-esc-TAG (the host checks that no such mount leaks out). */
const char *scratch(const char *tag)
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
int is_real(int fd, long magic)
{
    struct stat st;
    if (fstat(fd, &st) != 0 || S_ISCHR(st.st_mode))
        return 0;
    return fs_magic(fd) == magic;
}

/* Open PATH for writing and close it at once, never writing. */
int probe_write(const char *path, long magic, char *out, size_t n)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOCTTY), e = errno;
    if (fd < 0) {
        note(out, n, "%s: %s%s", path, en(e), e == ENOENT ? " (absent)" : "");
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

int write_file(const char *path, const char *s)
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

int read_file(const char *path, char *buf, size_t n)
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
int marker_at(const char *path)
{
    char buf[256];
    if (read_file(path, buf, sizeof buf) < 0)
        return 0;
    return *env("ESC_TOKEN") && strcmp(buf, env("ESC_TOKEN")) == 0;
}

/* Whether this process is in the initial user namespace (the host's). */
int in_init_userns(void)
{
    char buf[256];
    if (read_file("/proc/self/uid_map", buf, sizeof buf) < 0)
        return 1;
    unsigned long a, b, c;
    return sscanf(buf, "%lu %lu %lu", &a, &b, &c) == 3 && a == 0 && b == 0 && c == 4294967295UL;
}

/* Work in a private mount namespace: whatever is mounted vanishes with this process. */
void private_mounts(void)
{
    if (unshare(CLONE_NEWNS) == 0)
        mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
}

int read_mounts(struct mnt *out, int max)
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
int cgroup_of(const char *ctrl, char *path, size_t pn, char *opts, size_t on)
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
const char *mount_cgroup(const char *ctrl, const char *tag, char *target, size_t tn,
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

/* Whether this process shares the host's namespace of TYPE ("pid", "uts"...): 1 yes, 0 no,
 * -1 unknown. The test passes the host's namespace inodes as ESC_HOST_NS="pid:N,uts:N,...";
 * nsfs inode numbers are the same from every namespace. */
int shares_host_ns(const char *type)
{
    char key[32];
    snprintf(key, sizeof key, "%s:", type);
    const char *all = env("ESC_HOST_NS"), *p = all;
    while ((p = strstr(p, key)) && p != all && p[-1] != ',')
        p++;
    if (!p)
        return -1;
    char path[64];
    struct stat st;
    snprintf(path, sizeof path, "/proc/self/ns/%s", type);
    if (stat(path, &st) != 0)
        return -1;
    return (unsigned long long)st.st_ino == strtoull(p + strlen(key), NULL, 10);
}

/* EPERM/EACCES: refused by a capability check or an LSM; ENOSYS: no such syscall here
 * (seccomp or the kernel; the host control tells which). */
int refused(int e)
{
    return e == EPERM || e == EACCES || e == ENOSYS;
}

/* Open the device MAJ:MIN (its /dev node if there is one, else a fresh node). Returns the
 * fd or -1 with the story in OUT. */
int open_device(const char *devpath, int type, unsigned maj, unsigned min, int flags,
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
