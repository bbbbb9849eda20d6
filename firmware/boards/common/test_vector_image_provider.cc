// Image provider for boards without a camera (the QEMU boards, and real boards in their
// self-test build): the pipeline's held-out int8 test vectors, one per loop().
#include <string.h>

#include "image_provider.h"
#include "model_settings.h"
#include "test_vectors.h"

TfLiteStatus GetImage(int index, int image_width, int image_height, int channels,
                      int8_t* image_data) {
  const int n = image_width * image_height * channels;
  if (index < 0 || index >= kTestVectorCount || n != kTestVectorInputSize) return kTfLiteError;
  memcpy(image_data, g_test_vector_inputs + static_cast<long>(index) * n, n);
  return kTfLiteOk;
}

const int8_t* ExpectedScores(int index) {
  if (index < 0 || index >= kTestVectorCount || kTestVectorOutputSize != kCategoryCount) {
    return nullptr;
  }
  return g_test_vector_outputs + static_cast<long>(index) * kTestVectorOutputSize;
}

int ExpectedLabel(int index) {
  if (index < 0 || index >= kTestVectorCount) return -1;
  return g_test_vector_labels[index];
}
