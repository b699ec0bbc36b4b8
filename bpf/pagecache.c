/* Launch profiles: the file pages a launching process *uses* in its first MEMO_LAUNCH_WINDOW_NS,
 * whatever the page cache held (DESIGN "Launch profiles"): reads (filemap:mm_filemap_get_pages),
 * the fault-around window of mapped cached pages (mm_filemap_map_pages, up to 16 pages around a fault)
 * and file faults (mm_filemap_fault), within the file's size.
 * Page-cache insertions alone would see only misses, so a profile learned on a warm machine would
 * stay empty.
 *
 * Counted in the kernel: one `usage` entry per (pid, file, 64-page chunk) holds a bitmap of the pages
 * used. The collector drains an entry once its launch window is over, so nothing is sent while the
 * launch the user waits for runs. A range wider than MEMO_USAGE_CHUNKS chunks (a large read()) goes
 * to page_events as one record instead. These fire on every file read and fault of every process, so
 * they attach raw (no record formatting) and leave after one hash lookup for a process outside its
 * launch window. Inode fields come at offsets read from BTF (MEMO_OFF_*).
 */

static __always_inline u32 memo_inode_dev(u64 inode)
{
    u64 sb = 0;
    u32 dev = 0;

    bpf_probe_read_kernel(&sb, sizeof(sb), (void *)(inode + MEMO_OFF_INODE_SB));
    if (sb)
        bpf_probe_read_kernel(&dev, sizeof(dev), (void *)(sb + MEMO_OFF_SB_DEV));
    else /* as the filemap tracepoints do: a block device's own mapping */
        bpf_probe_read_kernel(&dev, sizeof(dev), (void *)(inode + MEMO_OFF_INODE_RDEV));
    return dev;
}

static __always_inline void memo_mark(struct memo_usage_key *k, u64 mask, u64 now)
{
    struct memo_usage *u = usage.lookup(k);

    if (!u) {
        struct memo_usage fresh = {.first_ns = now, .bits = mask};
        if (usage.insert(k, &fresh) == 0)
            return;
        u = usage.lookup(k); /* another CPU inserted it first */
        if (!u) {
            memo_count_lost(); /* the map is full */
            return;
        }
    }
    __sync_fetch_and_or(&u->bits, mask);
}

/* Pages [first, last] of the file behind `mapping` were used by the current process. */
static __always_inline int memo_use(u64 mapping, u64 first, u64 last)
{
    u32 pid = memo_tgid();
    u64 now = bpf_ktime_get_ns();
    u64 inode = 0;

    if (!memo_in_launch_window(pid, now) || last < first)
        return 0;
    bpf_probe_read_kernel(&inode, sizeof(inode), (void *)(mapping + MEMO_OFF_MAPPING_HOST));
    if (!inode)
        return 0;
    /* a read() asks for its whole buffer: keep what the file holds */
    s64 size = 0;
    bpf_probe_read_kernel(&size, sizeof(size), (void *)(inode + MEMO_OFF_INODE_SIZE));
    if (size <= 0)
        return 0;
    u64 last_page = ((u64)size - 1) >> 12;
    if (first > last_page)
        return 0;
    if (last > last_page)
        last = last_page;
    struct memo_usage_key k = {.pid = pid};
    bpf_probe_read_kernel(&k.ino, sizeof(k.ino), (void *)(inode + MEMO_OFF_INODE_INO));
    k.dev = memo_inode_dev(inode);

    u64 c0 = first >> MEMO_CHUNK_SHIFT, c1 = last >> MEMO_CHUNK_SHIFT;
    if (c1 - c0 >= MEMO_USAGE_CHUNKS) {
        struct memo_pagecache r = {.ts_ns = now, .pid = pid, .dev = k.dev, .ino = k.ino, .index = first};
        u64 n = last - first + 1;
        r.nr_pages = n > 0xffffffffULL ? 0xffffffffU : (u32)n;
        if (page_events.ringbuf_output(&r, sizeof(r), 0))
            memo_count_lost();
        return 0;
    }
#pragma unroll
    for (int i = 0; i < MEMO_USAGE_CHUNKS; i++) {
        u64 c = c0 + i;
        if (c > c1)
            break;
        u64 lo = c == c0 ? first & 63 : 0;
        u64 hi = c == c1 ? last & 63 : 63;
        k.chunk = c;
        memo_mark(&k, (~0ULL >> (63 - (hi - lo))) << lo, now);
    }
    return 0;
}

/* filemap_get_pages(): a read() of pages [index, last_index] */
int memo_use_read(struct bpf_raw_tracepoint_args *ctx)
{
    return memo_use(ctx->args[0], ctx->args[1], ctx->args[2]);
}

/* filemap_map_pages(): fault-around maps cached pages [index, last_index] */
int memo_use_map(struct bpf_raw_tracepoint_args *ctx)
{
    return memo_use(ctx->args[0], ctx->args[1], ctx->args[2]);
}

/* filemap_fault(): a fault on page index */
int memo_use_fault(struct bpf_raw_tracepoint_args *ctx)
{
    return memo_use(ctx->args[0], ctx->args[1], ctx->args[1]);
}
