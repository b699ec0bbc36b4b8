/* MEMO's kernel records: the one layout both sides read.
 *
 * The collector reflects these structs through bcc (b["<ring>"].event(data)) and converts each into
 * the matching model of memo/contract.py; tests/collector/test_contract.py checks that the field
 * names and kinds agree. Fields named pad* are alignment only. Keep every record a multiple of 8.
 */
#ifndef MEMO_H
#define MEMO_H

#define MEMO_COMM_LEN 16
#define MEMO_PATH_LEN 256

/* ring exec_events: sched:sched_process_exec -> ExecEvent */
struct memo_exec {
    u64 ts_ns;
    u32 pid;
    u32 ppid;
    u32 uid;
    u32 pad;
    u64 cgroup_id;
    char comm[MEMO_COMM_LEN];
    char filename[MEMO_PATH_LEN];
};

/* ring fork_events: a new process (threads are filtered out in the kernel) -> ForkEvent */
struct memo_fork {
    u64 ts_ns;
    u32 pid;
    u32 ppid;
    u32 uid;
    u32 pad;
    char comm[MEMO_COMM_LEN];
};

/* ring exit_events: a thread group's end, with the counters kept in `counts` -> ExitEvent */
struct memo_exit {
    u64 ts_ns;
    u32 pid;
    s32 exit_code; /* exit status, or -signal when a signal ended the process */
    u64 minflt;
    u64 majflt;
    u64 swapin;
};

/* ring page_events: a page range used in a launch window -> PageCacheEvent. Drained from `usage`
 * by the collector, or sent directly by pagecache.c for a range wider than MEMO_USAGE_CHUNKS chunks. */
struct memo_pagecache {
    u64 ts_ns;
    u32 pid;
    u32 dev; /* kernel encoding: major << 20 | minor */
    u64 ino;
    u64 index;
    u32 nr_pages;
    u32 pad;
};

/* ring swap_events: swap-ins of a process since its previous record -> SwapinEvent */
struct memo_swapin {
    u64 ts_ns;
    u32 pid;
    u32 pad;
    u64 memcg_id;
    u64 count;
};

/* ring open_events: a file opened in a launch window; collector-internal, it resolves
 * (dev, ino) -> path for pagecache records and is never sent on its own. dev and ino are the opened
 * file's, read in the kernel (0 when they could not be), so that a file the collector has named
 * already costs it no look at /proc. */
struct memo_open {
    u64 ts_ns;
    u32 pid;
    s32 fd;
    u64 ino;
    u32 dev; /* kernel encoding, as in memo_pagecache */
    u32 pad;
    char filename[MEMO_PATH_LEN];
};

/* map counts (pid -> value): per-process counters; swept into FaultsEvent, closed by ExitEvent. */
struct memo_counts {
    u64 faults;  /* every page fault, minor and major (faults.c says from where) */
    u64 majflt;  /* PGMAJFAULT from memcg:count_memcg_events */
    u64 swapin;  /* PSWPIN, whole life */
};

/* map swap_pending (pid -> value): swap-ins not yet reported in a swapin record. */
struct memo_swap_pending {
    u64 count;
    u64 last_emit_ns;
    u64 memcg_id;
};

/* map usage (key -> value): the pages of one 64-page chunk of a file that a launching process used. */
#define MEMO_CHUNK_SHIFT 6
struct memo_usage_key {
    u64 ino;
    u64 chunk; /* page index >> MEMO_CHUNK_SHIFT */
    u32 pid;
    u32 dev;
};

struct memo_usage {
    u64 first_ns; /* first use; the collector drains the entry once first_ns + launch window passed */
    u64 bits;     /* bit i: page (chunk << MEMO_CHUNK_SHIFT) + i was used */
};

#endif
