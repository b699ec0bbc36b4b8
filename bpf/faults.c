/* Page faults: counted per process in the kernel (no record per fault); the collector sweeps
 * `counts` every faults_interval_s into faults records, and the exit record carries the totals.
 *
 * Two sources (collector.fault_source; the loader says which it uses):
 * - memcg (default, with MEMO_FAULTS_FROM_MEMCG): swap.c's memo_memcg, on the PGFAULT item of
 *   memcg:count_memcg_events. That program already runs on every fault (the kernel accounts each
 *   one to the memcg there), so counting there costs no second program per fault; the count is the
 *   kernel's own (minflt + majflt of /proc/PID/stat), user-mode and kernel-mode faults alike.
 * - page_fault_user: memo_fault below on exceptions:page_fault_user (user-mode faults only), where
 *   the memcg tracepoint is not the swap source.
 * This runs on every page fault, so it is kept cheap:
 * - attached as a raw tracepoint: it needs none of the tracepoint's fields, and the raw form does
 *   not format them into a perf record first;
 * - counted in a per-CPU slot for the process last seen on that CPU, folded into the shared
 *   `counts` hash every MEMO_FAULT_BATCH faults, when another process faults there, and at exit.
 *   A process that ends on another CPU than its last faults may miss a few counts there (< batch).
 */

struct memo_fault_slot {
    u32 pid;
    u32 pad;
    u64 n;
};
BPF_PERCPU_ARRAY(fault_slot, struct memo_fault_slot, 1);

/* Fold a slot into `counts`; create the entry only for the running process (a slot's previous
 * process may have exited, and its entry must not come back). */
static __always_inline void memo_fault_fold(struct memo_fault_slot *s, int create)
{
    u32 pid = s->pid;
    struct memo_counts zero = {};
    struct memo_counts *c = create ? counts.lookup_or_try_init(&pid, &zero) : counts.lookup(&pid);

    if (c)
        __sync_fetch_and_add(&c->faults, s->n);
    s->n = 0;
}

static __always_inline void memo_fault_count(u64 n)
{
    int zero = 0;
    u32 pid = memo_tgid();
    struct memo_fault_slot *s = fault_slot.lookup(&zero);

    if (!s)
        return;
    if (s->pid != pid) {
        if (s->n)
            memo_fault_fold(s, 0);
        s->pid = pid;
    }
    s->n += n;
    if (s->n >= MEMO_FAULT_BATCH)
        memo_fault_fold(s, 1);
}

#ifndef MEMO_FAULTS_FROM_MEMCG
int memo_fault(struct bpf_raw_tracepoint_args *ctx)
{
    memo_fault_count(1);
    return 0;
}
#endif

/* Called by the exit program on the exiting process's CPU, before it reads `counts`. */
static __always_inline void memo_fault_flush_exiting(u32 pid)
{
    int zero = 0;
    struct memo_fault_slot *s = fault_slot.lookup(&zero);

    if (s && s->pid == pid && s->n)
        memo_fault_fold(s, 1);
}
