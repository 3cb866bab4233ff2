/*
 * test_backend_device.c - test_backend.c again with every fake tensor on the scrambled
 * fake device (it_test_util.h, TU_DEVICE).
 */
#define TU_DEVICE 1
#include "test_backend.c"
