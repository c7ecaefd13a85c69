// libAEDistHeapCounter.so: preload it (LD_PRELOAD) to count heap allocations per thread; aedist train then reports
// the training thread's allocations per step. A measuring tool, never linked into aedist.
#ifndef AEDIST_HEAP_COUNTER_H
#define AEDIST_HEAP_COUNTER_H
unsigned long long aedist_thread_heap_allocations(void);
#endif
