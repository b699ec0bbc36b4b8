/* MEMO's eBPF programs: the shared maps, then one file per concern.
 * collector/loader.py splices the concern files in (bcc makes tracepoint structs only for the main
 * file), compiles with -I<this dir> and the MEMO_* defines it derives from BTF and the config.
 */
#include "maps.c"
#include "faults.c"
#include "process.c"
#include "pagecache.c"
#include "files.c"
#include "swap.c"
