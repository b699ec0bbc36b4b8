/* Swap-ins and major faults per process. The loader picks one source and says which:
 *   MEMO_SWAP_TRACEPOINT  memcg:count_memcg_events, item == MEMO_PSWPIN / MEMO_PGMAJFAULT (from BTF),
 *                         and MEMO_PGFAULT when faults are counted here (faults.c); raw, because it
 *                         fires on every page fault and only those items matter: args are
 *                         (struct mem_cgroup *, int item, unsigned long val)
 *   MEMO_SWAP_KFUNC       fentry on MEMO_SWAP_FUNC (the kernel's swap-in function)
 *   MEMO_SWAP_KPROBE      kprobe on MEMO_SWAP_FUNC
 * Swap-ins are summed per process and emitted at most every MEMO_SWAP_EMIT_NS (and at exit), so a
 * process swapping in 100k pages costs a few records, not 100k. */

static __always_inline void memo_swapin(u32 pid, u64 memcg_id, u64 n)
{
    u64 now = bpf_ktime_get_ns();
    struct memo_counts zero = {};
    struct memo_counts *c = counts.lookup_or_try_init(&pid, &zero);
    if (c)
        __sync_fetch_and_add(&c->swapin, n);

    struct memo_swap_pending fresh = {.last_emit_ns = now, .memcg_id = memcg_id};
    struct memo_swap_pending *p = swap_pending.lookup_or_try_init(&pid, &fresh);
    if (!p)
        return;
    __sync_fetch_and_add(&p->count, n);
    p->memcg_id = memcg_id;
    if (now - p->last_emit_ns < MEMO_SWAP_EMIT_NS)
        return;
    u64 count = __sync_fetch_and_add(&p->count, 0);
    if (!count)
        return;
    __sync_fetch_and_add(&p->count, -count);
    p->last_emit_ns = now;
    struct memo_swapin s = {.ts_ns = now, .pid = pid, .memcg_id = memcg_id, .count = count};
    if (swap_events.ringbuf_output(&s, sizeof(s), 0))
        memo_count_lost();
}

#ifdef MEMO_SWAP_TRACEPOINT
/* cgroup_id(memcg->css.cgroup), what the tracepoint's `id` field holds; offsets from BTF */
static __always_inline u64 memo_memcg_id(u64 memcg)
{
    u64 cgrp = 0, kn = 0, id = 0;

    bpf_probe_read_kernel(&cgrp, sizeof(cgrp), (void *)(memcg + MEMO_OFF_MEMCG_CSS + MEMO_OFF_CSS_CGROUP));
    if (cgrp)
        bpf_probe_read_kernel(&kn, sizeof(kn), (void *)(cgrp + MEMO_OFF_CGROUP_KN));
    if (kn)
        bpf_probe_read_kernel(&id, sizeof(id), (void *)(kn + MEMO_OFF_KERNFS_ID));
    return id;
}

int memo_memcg(struct bpf_raw_tracepoint_args *ctx)
{
    int item = ctx->args[1];
    u64 val = ctx->args[2];
    u32 pid;

#ifdef MEMO_FAULTS_FROM_MEMCG
    if (item == MEMO_PGFAULT) {
        memo_fault_count(val);
        return 0;
    }
#endif
    if (item != MEMO_PSWPIN && item != MEMO_PGMAJFAULT)
        return 0;
    pid = memo_tgid();
    if (item == MEMO_PSWPIN) {
        memo_swapin(pid, memo_memcg_id(ctx->args[0]), val);
    } else {
        struct memo_counts zero = {};
        struct memo_counts *c = counts.lookup_or_try_init(&pid, &zero);
        if (c)
            __sync_fetch_and_add(&c->majflt, val);
    }
    return 0;
}
#endif

#ifdef MEMO_SWAP_KFUNC
#define MEMO_KFUNC_PROBE(f) KFUNC_PROBE(f) /* expands MEMO_SWAP_FUNC before KFUNC_PROBE pastes it */
MEMO_KFUNC_PROBE(MEMO_SWAP_FUNC)
{
    memo_swapin(memo_tgid(), 0, 1);
    return 0;
}
#endif

#ifdef MEMO_SWAP_KPROBE
int memo_swap_kprobe(struct pt_regs *ctx)
{
    memo_swapin(memo_tgid(), 0, 1);
    return 0;
}
#endif
