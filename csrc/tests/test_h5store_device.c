/*
 * test_h5store_device.c - test_h5store.c again with every fake tensor on the
 * scrambled fake device (it_test_util.h, TU_DEVICE): tiles are staged
 * through host memory on their way to and from the file.
 */
#define TU_DEVICE 1
#include "test_h5store.c"
