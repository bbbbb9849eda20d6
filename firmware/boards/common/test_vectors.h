// Held-out test vectors, generated at build time from the pipeline's test_vectors.npz by
// firmware/tools/gen_test_vectors.py: int8 model inputs, the host tflite-micro outputs
// for them and the true labels.
#ifndef FIRMWARE_BOARDS_COMMON_TEST_VECTORS_H_
#define FIRMWARE_BOARDS_COMMON_TEST_VECTORS_H_

#include <stdint.h>

extern const int kTestVectorCount;
extern const int kTestVectorInputSize;   // rows * cols * channels
extern const int kTestVectorOutputSize;  // classes
extern const int8_t g_test_vector_inputs[];
extern const int8_t g_test_vector_outputs[];
extern const int16_t g_test_vector_labels[];

#endif  // FIRMWARE_BOARDS_COMMON_TEST_VECTORS_H_
