/* Page faults: counted per process in the kernel (no record per fault); the collector sweeps
 * `counts` every faults_interval_s into faults records, and the exit record carries the totals.
 *
 * This runs on every user page fault, so it is kept cheap:
 * - attached as a raw tracepoint to exceptions:page_fault_user: it needs none of the tracepoint's
 *   fields, and the raw form does not format them into a perf record first;
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

int memo_fault(struct bpf_raw_tracepoint_args *ctx)
{
    int zero = 0;
    u32 pid = memo_tgid();
    struct memo_fault_slot *s = fault_slot.lookup(&zero);

    if (!s)
        return 0;
    if (s->pid != pid) {
        if (s->n)
            memo_fault_fold(s, 0);
        s->pid = pid;
    }
    if (++s->n >= MEMO_FAULT_BATCH)
        memo_fault_fold(s, 1);
    return 0;
}

/* Called by the exit program on the exiting process's CPU, before it reads `counts`. */
static __always_inline void memo_fault_flush_exiting(u32 pid)
{
    int zero = 0;
    struct memo_fault_slot *s = fault_slot.lookup(&zero);

    if (s && s->pid == pid && s->n)
        memo_fault_fold(s, 1);
}
