#define _GNU_SOURCE
#include "heap_allocations.h"
#include <dlfcn.h>
#include <stddef.h>

typedef unsigned long long (*counter_function)(void);

// Looked up once: dlsym may allocate, and the count must not include its own lookup.
static counter_function counter(void) {
    static int looked_up;
    static counter_function function;
    if (!looked_up) {
        function = (counter_function)dlsym(RTLD_DEFAULT, "aedist_thread_heap_allocations");
        looked_up = 1;
    }
    return function;
}

int aedheap_counting(void) { return counter() != NULL; }

unsigned long long aedheap_thread_allocations(void) {
    counter_function function = counter();
    return function ? function() : 0;
}
