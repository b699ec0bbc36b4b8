/* openat tracing in launch windows, so that the collector can name the files behind the
 * (dev, ino) of pagecache records even when the process is gone before it looks at /proc.
 * The record carries the opened file's (dev, ino), read here through the new fd (offsets from BTF),
 * so that the collector resolves a name only for files it has not named before: a program opens the
 * same files at every start, and each resolution was a readlink and stats on the launch's CPUs. */

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

/* (dev, ino) of the current process's open file `fd`: task->files->fdt->fd[fd]->f_inode. Left 0
 * when a read fails (the collector then resolves the name from /proc as before). */
static __always_inline void memo_fd_inode(s32 fd, u32 *dev, u64 *ino)
{
    u64 task = bpf_get_current_task(), files = 0, fdt = 0, fds = 0, file = 0, inode = 0;
    u32 max_fds = 0;

    bpf_probe_read_kernel(&files, sizeof(files), (void *)(task + MEMO_OFF_TASK_FILES));
    if (files)
        bpf_probe_read_kernel(&fdt, sizeof(fdt), (void *)(files + MEMO_OFF_FILES_FDT));
    if (!fdt)
        return;
    bpf_probe_read_kernel(&max_fds, sizeof(max_fds), (void *)(fdt + MEMO_OFF_FDTABLE_MAX_FDS));
    if ((u32)fd >= max_fds)
        return;
    bpf_probe_read_kernel(&fds, sizeof(fds), (void *)(fdt + MEMO_OFF_FDTABLE_FD));
    if (fds)
        bpf_probe_read_kernel(&file, sizeof(file), (void *)(fds + (u64)fd * sizeof(u64)));
    if (file)
        bpf_probe_read_kernel(&inode, sizeof(inode), (void *)(file + MEMO_OFF_FILE_INODE));
    if (!inode)
        return;
    bpf_probe_read_kernel(ino, sizeof(*ino), (void *)(inode + MEMO_OFF_INODE_INO));
    *dev = memo_inode_dev(inode);
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
    memo_fd_inode(o.fd, &o.dev, &o.ino);
    bpf_probe_read_user_str(&o.filename, sizeof(o.filename), (void *)ptr);
    /* No wake-up: a launch opens hundreds of files, and each record woke the collector's loop (the
     * ring wakes its reader when it was empty). They are taken on its next round: every POLL_MS
     * (collector/sources.py) while a launch window is open. */
    if (open_events.ringbuf_output(&o, sizeof(o), BPF_RB_NO_WAKEUP))
        memo_count_lost();
    return 0;
}
