/*
 * test_alloc_device.c - test_alloc.c again with every fake tensor on the
 * scrambled fake device (it_test_util.h, TU_DEVICE), whose allocations go
 * through the core allocator: every device allocation fails in turn too.
 */
#define TU_DEVICE 1
#include "test_alloc.c"
