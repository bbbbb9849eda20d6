#include "postprocess.h"

#include <math.h>

namespace tinyml {

int Argmax(const int8_t* scores, int n) {
  if (n < 1) return -1;
  int best = 0;
  for (int i = 1; i < n; ++i) {
    if (scores[i] > scores[best]) best = i;
  }
  return best;
}

int TopK(const int8_t* scores, int n, int k, int* indices) {
  if (k > n) k = n;
  if (k < 0) k = 0;
  // Selection: for each rank take the best not yet taken, lowest index on ties.
  for (int r = 0; r < k; ++r) {
    int best = -1;
    for (int i = 0; i < n; ++i) {
      bool taken = false;
      for (int j = 0; j < r; ++j) {
        if (indices[j] == i) {
          taken = true;
          break;
        }
      }
      if (taken) continue;
      if (best < 0 || scores[i] > scores[best]) best = i;
    }
    indices[r] = best;
  }
  return k;
}

void SoftmaxDequantized(const int8_t* scores, int n, float scale, int zero_point, float* probs) {
  if (n < 1) return;
  const int m = Argmax(scores, n);
  const float top = Dequantize(scores[m], scale, zero_point);
  float sum = 0.0f;
  for (int i = 0; i < n; ++i) {
    probs[i] = expf(Dequantize(scores[i], scale, zero_point) - top);
    sum += probs[i];
  }
  for (int i = 0; i < n; ++i) probs[i] /= sum;
}

bool ScoreSmoother::Init(int num_classes, int window, int threshold, int min_count) {
  if (num_classes < 1 || num_classes > kMaxClasses || window < 1 || window > kMaxWindow ||
      min_count < 1 || min_count > window) {
    return false;
  }
  num_classes_ = num_classes;
  window_ = window;
  threshold_ = threshold;
  min_count_ = min_count;
  Reset();
  return true;
}

void ScoreSmoother::Reset() {
  count_ = 0;
  head_ = 0;
  last_label_ = -1;
  for (int c = 0; c < kMaxClasses; ++c) sums_[c] = 0;
}

int ScoreSmoother::Average(int cls) const {
  if (count_ == 0 || cls < 0 || cls >= num_classes_) return 0;
  const int32_t s = sums_[cls];
  // round half away from zero
  return s >= 0 ? (s + count_ / 2) / count_ : -((-s + count_ / 2) / count_);
}

ScoreSmoother::Result ScoreSmoother::Update(const int8_t* scores) {
  if (count_ == window_) {  // drop the oldest
    for (int c = 0; c < num_classes_; ++c) sums_[c] -= history_[head_][c];
  } else {
    ++count_;
  }
  for (int c = 0; c < num_classes_; ++c) {
    history_[head_][c] = scores[c];
    sums_[c] += scores[c];
  }
  head_ = (head_ + 1) % window_;

  Result r = {-1, 0, false, false};
  if (count_ < min_count_) return r;
  int best = 0;
  for (int c = 1; c < num_classes_; ++c) {
    if (sums_[c] > sums_[best]) best = c;
  }
  r.label = best;
  r.score = Average(best);
  r.accepted = r.score >= threshold_;
  if (r.accepted) {
    r.changed = best != last_label_;
    last_label_ = best;
  }
  return r;
}

}  // namespace tinyml
