/* Maps and helpers shared by the concern files; memo.c includes this first.
 * MEMO_RINGBUF_PAGES and the other MEMO_* macros come from the loader's cflags (collector/loader.py).
 */
#ifndef MEMO_MAPS_C
#define MEMO_MAPS_C

#include "memo.h"

BPF_RINGBUF_OUTPUT(exec_events, MEMO_RINGBUF_PAGES);
BPF_RINGBUF_OUTPUT(fork_events, MEMO_RINGBUF_PAGES);
BPF_RINGBUF_OUTPUT(exit_events, MEMO_RINGBUF_PAGES);
BPF_RINGBUF_OUTPUT(page_events, MEMO_RINGBUF_PAGES);
BPF_RINGBUF_OUTPUT(swap_events, MEMO_RINGBUF_PAGES);
BPF_RINGBUF_OUTPUT(open_events, MEMO_RINGBUF_PAGES);

BPF_HASH(counts, u32, struct memo_counts, 65536);
BPF_HASH(swap_pending, u32, struct memo_swap_pending, 65536);
/* pid -> exec time (ns); a pid is in its launch window while now - value <= MEMO_LAUNCH_WINDOW_NS */
BPF_HASH(launch, u32, u64, 65536);
/* chunks of files used by launching processes, drained by the collector (pagecache.c) */
BPF_HASH(usage, struct memo_usage_key, struct memo_usage, MEMO_USAGE_ENTRIES);
/* records the ring buffers could not take (full): reported as `lost` records */
BPF_PERCPU_ARRAY(lost, u64, 1);

static __always_inline void memo_count_lost(void)
{
    int zero = 0;
    u64 *n = lost.lookup(&zero);
    if (n)
        (*n)++;
}

static __always_inline u32 memo_tgid(void)
{
    return bpf_get_current_pid_tgid() >> 32;
}

static __always_inline int memo_in_launch_window(u32 pid, u64 now)
{
    u64 *start = launch.lookup(&pid);
    if (!start)
        return 0;
    if (now - *start > MEMO_LAUNCH_WINDOW_NS) {
        launch.delete(&pid);
        return 0;
    }
    return 1;
}

#endif
