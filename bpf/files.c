/* openat tracing in launch windows, so that the collector can name the files behind the
 * (dev, ino) of pagecache records even when the process is gone before it looks at /proc. */

BPF_HASH(open_args, u32, u64, 4096); /* tid -> user pointer to the path being opened */

int memo_openat_enter(struct tracepoint__syscalls__sys_enter_openat *args)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = id;
    u64 name = (u64)args->filename;

    if (!memo_in_launch_window(id >> 32, bpf_ktime_get_ns()))
        return 0;
    open_args.update(&tid, &name);
    return 0;
}

int memo_openat_exit(struct tracepoint__syscalls__sys_exit_openat *args)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = id;
    u64 *name = open_args.lookup(&tid);

    if (!name)
        return 0;
    u64 ptr = *name;
    open_args.delete(&tid);
    if (args->ret < 0)
        return 0;
    struct memo_open o = {};
    o.ts_ns = bpf_ktime_get_ns();
    o.pid = id >> 32;
    o.fd = args->ret;
    bpf_probe_read_user_str(&o.filename, sizeof(o.filename), (void *)ptr);
    /* No wake-up: a launch opens hundreds of files, and each record woke the collector's loop (the
     * ring wakes its reader when it was empty). They are taken on its next round: every POLL_MS
     * (collector/sources.py) while a launch window is open. */
    if (open_events.ringbuf_output(&o, sizeof(o), BPF_RB_NO_WAKEUP))
        memo_count_lost();
    return 0;
}
