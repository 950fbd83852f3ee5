/*
 * kernel.c: escape techniques against the host kernel's own interfaces: its /proc and /sys
 * knobs, privileged syscalls, devices and host-wide pseudo filesystems. Each observes and
 * never acts (see attacks.c).
 */
#include "attacks.h"

/* ------------------------------------------------------------------ /proc and /sys */

int t_sysrq_trigger(void)
{
    char out[512] = "";
    if (probe_write("/proc/sysrq-trigger", PROC_SUPER_MAGIC, out, sizeof out))
        return escaped("%s", out);
    return blocked("%s", out);
}

int t_core_pattern(void)
{
    char out[512] = "";
    if (probe_write("/proc/sys/kernel/core_pattern", PROC_SUPER_MAGIC, out, sizeof out))
        return escaped("%s: a core dump would run a host program as root", out);
    return blocked("%s", out);
}

int t_modprobe_path(void)
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

int t_proc_sys_remount(void)
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

int t_sys_remount(void)
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

int t_fresh_proc(void)
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

int t_proc_kcore(void)
{
    int fd = open("/proc/kcore", O_RDONLY | O_CLOEXEC), oe = errno;
    if (fd < 0)
        return blocked("open /proc/kcore: %s%s", en(oe), oe == ENOENT ? " (absent)" : "");
    char b[4] = {0};
    ssize_t r = read(fd, b, 4);
    int e = errno, real = is_real(fd, PROC_SUPER_MAGIC);
    close(fd);
    if (r == 4 && memcmp(b, "\177ELF", 4) == 0 && real)
        return escaped("read the ELF header of /proc/kcore (host kernel memory)");
    return blocked("/proc/kcore: %s", r < 0 ? en(e) : "masked (no ELF header)");
}

int t_proc_kallsyms(void)
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

int t_proc_kmsg(void)
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

int t_proc_kpageflags(void)
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

int t_syslog_read(void)
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

int t_kexec_load(void)
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

int t_kexec_file_load(void)
{
    long r = syscall(SYS_kexec_file_load, -1, -1, 0UL, NULL, 0xdead0000UL);
    int e = errno;
    if (r == 0)
        return escaped("kexec_file_load returned 0");
    if (refused(e))
        return blocked("kexec_file_load: %s", en(e));
    return escaped("kexec_file_load passed the CAP_SYS_BOOT check (%s for invalid flags)", en(e));
}

int t_init_module(void)
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

int t_finit_module(void)
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

int t_delete_module(void)
{
    long r = syscall(SYS_delete_module, "ctl_escape_no_such_module", O_NONBLOCK);
    int e = errno;
    if (r == 0)
        return escaped("delete_module returned 0");
    if (refused(e))
        return blocked("delete_module: %s", en(e));
    return escaped("delete_module passed the CAP_SYS_MODULE check (%s for a missing module)", en(e));
}

int t_umount_force(void)
{
    private_mounts();
    const char *dir = scratch("umount");
    /* Only ever a tmpfs of our own (tmpfs has no umount_begin): MNT_FORCE on a shared
     * FUSE or NFS mount, such as lxcfs, would abort it for the whole host. */
    if (mount("none", dir, "tmpfs", 0, "size=16k") != 0)
        return blocked("mount a tmpfs to force-unmount: %s", en(errno));
    if (umount2(dir, MNT_FORCE) == 0)
        return escaped("umount2(MNT_FORCE) allowed (no capability guards it, only a seccomp filter: on a "
                       "shared FUSE mount such as lxcfs it aborts the host's connection)");
    int e = errno;
    umount2(dir, MNT_DETACH);
    if (refused(e))
        return blocked("umount2(MNT_FORCE): %s", en(e));
    return escaped("umount2(MNT_FORCE) got past the permission check (%s)", en(e));
}

int t_keyctl_host_key(void)
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

int t_keyctl_session(void)
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

int t_bpf_prog_load(void)
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

int t_perf_event_open(void)
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

int t_userfaultfd(void)
{
    long fd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return blocked("userfaultfd (kernel faults too): %s", en(errno));
    close((int)fd);
    return escaped("got a userfaultfd that handles kernel faults (an exploit primitive, not a host object)");
}

int t_reboot(void)
{
    long r = syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, 0xdeadbeefU, NULL);
    int e = errno;
    if (r == 0)
        return escaped("reboot(2) with an invalid command returned 0");
    if (refused(e))
        return blocked("reboot: %s", en(e));
    /* Past the capability check. In a child PID namespace reboot(2) only ends the
     * namespace's init; in the host's it would reboot the machine. */
    int child = !shares_host_ns("pid");
    if (shares_host_ns("pid") < 0) {
        /* No word from the host: our parent outside the namespace, or a parent namespace
         * in reach, says child. */
        child = getppid() == 0;
        int fd = open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC);
        int parent = fd >= 0 ? ioctl(fd, NS_GET_PARENT) : -1;
        child |= parent >= 0;
        if (parent >= 0)
            close(parent);
        if (fd >= 0)
            close(fd);
    }
    if (child)
        return blocked("reboot: %s; in a child PID namespace it only stops this container", en(e));
    return escaped("reboot passed the CAP_SYS_BOOT check (%s) in the host's PID namespace", en(e));
}

int t_swapon(void)
{
    if (swapon("/ctl-escape-no-such-swapfile", 0) == 0)
        return escaped("swapon returned 0");
    int e = errno;
    if (refused(e))
        return blocked("swapon: %s", en(e));
    return escaped("swapon passed the CAP_SYS_ADMIN check (%s for a missing file): could add host swap", en(e));
}

int t_set_clock(void)
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

int t_iopl_ioperm(void)
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

int t_dev_mem(void)
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

int t_mknod_host_disk(void)
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

int t_mknod_kmsg(void)
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

int t_mount_debugfs(void) { return mount_pseudo("debugfs"); }
int t_mount_tracefs(void) { return mount_pseudo("tracefs"); }
int t_mount_securityfs(void) { return mount_pseudo("securityfs"); }
int t_mount_pstore(void) { return mount_pseudo("pstore"); }
int t_mount_binfmt_misc(void) { return mount_pseudo("binfmt_misc"); }
int t_mount_bpffs(void) { return mount_pseudo("bpf"); }
int t_mount_devtmpfs(void) { return mount_pseudo("devtmpfs"); }
int t_mount_fusectl(void) { return mount_pseudo("fusectl"); }
