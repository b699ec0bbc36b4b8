/* Launch profiles: folios a process adds to the page cache in its first MEMO_LAUNCH_WINDOW_NS,
 * each (pid, dev, ino, index) reported once (the `seen` LRU de-duplicates re-reads). */

int memo_pagecache(struct tracepoint__filemap__mm_filemap_add_to_page_cache *args)
{
    u32 pid = memo_tgid();
    u64 now = bpf_ktime_get_ns();
    u8 one = 1;

    if (!memo_in_launch_window(pid, now))
        return 0;
    struct memo_page_key k = {.ino = args->i_ino, .index = args->index, .pid = pid, .dev = args->s_dev};
    if (seen.insert(&k, &one))
        return 0; /* already reported */

    struct memo_pagecache r = {};
    r.ts_ns = now;
    r.pid = pid;
    r.dev = args->s_dev;
    r.ino = args->i_ino;
    r.index = args->index;
#ifdef MEMO_PAGECACHE_HAS_ORDER
    r.nr_pages = 1U << (args->order & 31);
#else
    r.nr_pages = 1;
#endif
    if (page_events.ringbuf_output(&r, sizeof(r), 0))
        memo_count_lost();
    return 0;
}
