/*
 * test_tensor_device.c - every test of test_tensor.c again, with each fake
 * tensor's tiles, reads, arguments and outputs on a scrambled fake device
 * (see it_test_util.h, TU_DEVICE): the core's device-ops path, the one CUDA
 * tensors take, checked against the same references on a machine without a
 * GPU.
 */
#define TU_DEVICE 1
#include "test_tensor.c"
