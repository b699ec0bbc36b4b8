/* Process life: exec, fork and exit records.
 *
 * struct task_struct offsets (MEMO_OFF_*) come from the running kernel's BTF: the headers bcc
 * compiles against may belong to another kernel version, so the struct layout in them is not trusted.
 */

static __always_inline u32 memo_ppid(void)
{
    u64 task = bpf_get_current_task();
    u64 parent = 0;
    u32 tgid = 0;
    bpf_probe_read_kernel(&parent, sizeof(parent), (void *)(task + MEMO_OFF_REAL_PARENT));
    if (parent)
        bpf_probe_read_kernel(&tgid, sizeof(tgid), (void *)(parent + MEMO_OFF_TGID));
    return tgid;
}

int memo_exec(struct tracepoint__sched__sched_process_exec *args)
{
    struct memo_exec e = {};
    u32 pid = args->pid;
    u64 now = bpf_ktime_get_ns();

    e.ts_ns = now;
    e.pid = pid;
    e.ppid = memo_ppid();
    e.uid = bpf_get_current_uid_gid();
    e.cgroup_id = bpf_get_current_cgroup_id();
    bpf_get_current_comm(&e.comm, sizeof(e.comm));
    TP_DATA_LOC_READ_STR(&e.filename, filename, sizeof(e.filename));
    launch.update(&pid, &now);
    if (exec_events.ringbuf_output(&e, sizeof(e), 0))
        memo_count_lost();
    return 0;
}

/* task:task_newtask carries clone_flags, which tells a process from a thread (sched_process_fork
 * does not); it fires in the parent, after the child's pid is set. */
int memo_fork(struct tracepoint__task__task_newtask *args)
{
    struct memo_fork f = {};

    if (args->clone_flags & 0x00010000 /* CLONE_THREAD */)
        return 0;
    f.ts_ns = bpf_ktime_get_ns();
    f.pid = args->pid;
    f.ppid = memo_tgid();
    /* a child forked in its parent's launch window (a zygote, a worker pool) shares that window:
     * what it uses belongs to the launch's profile */
    u64 *start = launch.lookup(&f.ppid);
    if (start && f.ts_ns - *start <= MEMO_LAUNCH_WINDOW_NS) {
        u64 s = *start;
        launch.update(&f.pid, &s);
    }
    f.uid = bpf_get_current_uid_gid();
    __builtin_memcpy(&f.comm, args->comm, sizeof(f.comm));
    if (fork_events.ringbuf_output(&f, sizeof(f), 0))
        memo_count_lost();
    return 0;
}

int memo_exit(struct tracepoint__sched__sched_process_exit *args)
{
    struct memo_exit x = {};
    u64 id = bpf_get_current_pid_tgid();
    u32 pid = id >> 32;
    u64 task = bpf_get_current_task();
    int code = 0;

#ifdef MEMO_EXIT_HAS_GROUP_DEAD
    if (!args->group_dead)
        return 0;
#else
    if ((u32)id != pid)
        return 0;
#endif
    bpf_probe_read_kernel(&code, sizeof(code), (void *)(task + MEMO_OFF_EXIT_CODE));
    x.exit_code = (code & 0x7f) ? -(code & 0x7f) : (code >> 8) & 0xff;
    x.ts_ns = bpf_ktime_get_ns();
    x.pid = pid;

    memo_fault_flush_exiting(pid);
    struct memo_counts *c = counts.lookup(&pid);
    if (c) {
        x.majflt = c->majflt;
        x.minflt = c->faults > c->majflt ? c->faults - c->majflt : 0;
        x.swapin = c->swapin;
        counts.delete(&pid);
    }
    /* the swap-ins not yet reported go out before the exit record */
    struct memo_swap_pending *p = swap_pending.lookup(&pid);
    if (p) {
        if (p->count) {
            struct memo_swapin s = {.ts_ns = x.ts_ns, .pid = pid, .memcg_id = p->memcg_id,
                                    .count = p->count};
            if (swap_events.ringbuf_output(&s, sizeof(s), 0))
                memo_count_lost();
        }
        swap_pending.delete(&pid);
    }
    launch.delete(&pid);
    if (exit_events.ringbuf_output(&x, sizeof(x), 0))
        memo_count_lost();
    return 0;
}
