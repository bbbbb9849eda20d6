// Model output -> decision: argmax, top-k, dequantisation, softmax, smoothing over frames.
// Board-independent plain C++ (no TFLM, no allocation), host-tested like image_preprocess.
#ifndef FIRMWARE_SRC_POSTPROCESS_H_
#define FIRMWARE_SRC_POSTPROCESS_H_

#include <stddef.h>
#include <stdint.h>

namespace tinyml {

// Index of the largest score; the first one on ties (as numpy.argmax). -1 if n < 1.
int Argmax(const int8_t* scores, int n);

// The k best indices, best first; ties keep the lower index first (as
// numpy.argsort(-scores, kind="stable")[:k]). Returns how many were written (min(k, n)).
int TopK(const int8_t* scores, int n, int k, int* indices);

// (q - zero_point) * scale: the logit the int8 score stands for.
inline float Dequantize(int8_t q, float scale, int zero_point) {
  return static_cast<float>(static_cast<int>(q) - zero_point) * scale;
}

// Softmax of the dequantised scores into probs[n] (float, max-subtracted for stability).
void SoftmaxDequantized(const int8_t* scores, int n, float scale, int zero_point, float* probs);

// Moving average of the last `window` score vectors with a decision rule, in the spirit
// of TFLM's micro_speech RecognizeCommands: a class is reported when its averaged score
// (int8 units) is the best, at least `threshold`, and the window has filled at least
// `min_count` frames. Integer-only so every target agrees.
class ScoreSmoother {
 public:
  static constexpr int kMaxClasses = 64;
  static constexpr int kMaxWindow = 16;

  // Returns false if num_classes or window are out of range.
  bool Init(int num_classes, int window, int threshold, int min_count);
  void Reset();

  struct Result {
    int label;       // best class of the average, -1 while fewer than min_count frames
    int score;       // its averaged score (int8 units, rounded to nearest, ties away from 0)
    bool accepted;   // label >= 0 and score >= threshold
    bool changed;    // accepted and label differs from the last accepted label
  };
  Result Update(const int8_t* scores);
  int count() const { return count_; }
  int Average(int cls) const;  // averaged score of cls over the frames in the window

 private:
  int num_classes_ = 0, window_ = 1, threshold_ = 0, min_count_ = 1;
  int count_ = 0, head_ = 0, last_label_ = -1;
  int8_t history_[kMaxWindow][kMaxClasses] = {};
  int32_t sums_[kMaxClasses] = {};
};

}  // namespace tinyml

#endif  // FIRMWARE_SRC_POSTPROCESS_H_
