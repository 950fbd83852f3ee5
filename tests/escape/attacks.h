/*
 * attacks.h: what the escape techniques share (tests/tests/escape.rs runs them; attacks.c
 * says how and why they are safe to run on a real host).
 */
#ifndef CTL_ESCAPE_ATTACKS_H
#define CTL_ESCAPE_ATTACKS_H

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

/* Verdicts: each technique ends by returning one of these; the last one set is printed. */
enum { NONE, BLOCKED, ESCAPED, ERROR };
__attribute__((format(printf, 1, 2))) int blocked(const char *fmt, ...);
__attribute__((format(printf, 1, 2))) int escaped(const char *fmt, ...);
__attribute__((format(printf, 1, 2))) int error(const char *fmt, ...);
/* Append to a note buffer. */
__attribute__((format(printf, 3, 4))) void note(char *buf, size_t n, const char *fmt, ...);

/* Helpers (attacks.c). */

/* One line of /proc/self/mountinfo. */
struct mnt {
    unsigned maj, min;
    char root[256];
    char point[256];
    char fstype[64];
    char super[1024];
};

const char *en(int e);
const char *env(const char *k);
const char *scratch(const char *tag);
int is_real(int fd, long magic);
int probe_write(const char *path, long magic, char *out, size_t n);
int write_file(const char *path, const char *s);
int read_file(const char *path, char *buf, size_t n);
int marker_at(const char *path);
int in_init_userns(void);
void private_mounts(void);
int read_mounts(struct mnt *out, int max);
int cgroup_of(const char *ctrl, char *path, size_t pn, char *opts, size_t on);
const char *mount_cgroup(const char *ctrl, const char *tag, char *target, size_t tn, char *out, size_t on);
int shares_host_ns(const char *type);
int refused(int e);
int open_device(const char *devpath, int type, unsigned maj, unsigned min, int flags, char *out, size_t n);

/* Techniques: kernel.c (the host kernel's interfaces) and isolation.c (namespaces, the
 * daemon's own hygiene, cgroups). */
int t_sysrq_trigger(void);
int t_core_pattern(void);
int t_modprobe_path(void);
int t_proc_sys_remount(void);
int t_sys_remount(void);
int t_fresh_proc(void);
int t_proc_kcore(void);
int t_proc_kallsyms(void);
int t_proc_kmsg(void);
int t_proc_kpageflags(void);
int t_syslog_read(void);
int t_kexec_load(void);
int t_kexec_file_load(void);
int t_init_module(void);
int t_finit_module(void);
int t_delete_module(void);
int t_shocker(void);
int t_umount_force(void);
int t_keyctl_host_key(void);
int t_keyctl_session(void);
int t_bpf_prog_load(void);
int t_perf_event_open(void);
int t_userfaultfd(void);
int t_reboot(void);
int t_swapon(void);
int t_set_clock(void);
int t_iopl_ioperm(void);
int t_dev_mem(void);
int t_mknod_host_disk(void);
int t_mknod_kmsg(void);
int t_mount_debugfs(void);
int t_mount_tracefs(void);
int t_mount_securityfs(void);
int t_mount_pstore(void);
int t_mount_binfmt_misc(void);
int t_mount_bpffs(void);
int t_mount_devtmpfs(void);
int t_mount_fusectl(void);
int t_unshare_userns(void);
int t_chroot_escape(void);
int t_host_process(void);
int t_proc_pid_root(void);
int t_leaked_fd_cwd(void);
int t_setns_foreign(void);
int t_exec_host_exe(void);
int t_abstract_socket(void);
int t_sethostname(void);
int t_image_layer(void);
int t_cgroup_release_agent(void);
int t_cgroup_memory_raise(void);
int t_cgroup_pids_raise(void);
int t_cgroup_devices_allow(void);

#endif
