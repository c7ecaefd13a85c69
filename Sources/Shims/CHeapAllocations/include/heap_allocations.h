// Reads the heap-allocation counter of libAEDistHeapCounter.so when the process runs with it preloaded
// (LD_PRELOAD); without it, counting is off and the count stays 0.
#ifndef AEDIST_HEAP_ALLOCATIONS_H
#define AEDIST_HEAP_ALLOCATIONS_H

/// Non-zero when the counter library is loaded.
int aedheap_counting(void);
/// malloc, calloc, realloc and aligned allocations made by the calling thread so far.
unsigned long long aedheap_thread_allocations(void);

#endif
