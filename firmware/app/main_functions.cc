// The application, board-independent: load the generated model, run it on the images the
// board's image provider gives, report through the board's classification responder.
#include "main_functions.h"

#include <stdint.h>
#include <string.h>

#include "board.h"
#include "classification_responder.h"
#include "image_provider.h"
#include "model_data.h"
#include "model_settings.h"
#include "postprocess.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_log.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/micro/micro_profiler_interface.h"
#include "tensorflow/lite/micro/system_setup.h"
#include "tensorflow/lite/schema/schema_generated.h"

#if defined(TF_LITE_MCU_DEBUG_LOG) && !defined(ESP_PLATFORM)
#include "tensorflow/lite/micro/cortex_m_generic/debug_log_callback.h"
#endif

#ifndef FW_SMOOTHING_WINDOW
#define FW_SMOOTHING_WINDOW 3
#endif
#ifndef FW_SMOOTHING_THRESHOLD
#define FW_SMOOTHING_THRESHOLD 0  // int8 score units
#endif

namespace {

const tflite::Model* model = nullptr;
tflite::MicroInterpreter* interpreter = nullptr;
TfLiteTensor* input = nullptr;
tinyml::ScoreSmoother smoother;
bool smoothing = false;  // off for models with more classes than the smoother holds

#if defined(FW_ARENA_SECTION)
__attribute__((section(FW_ARENA_SECTION)))
#endif
alignas(16) uint8_t tensor_arena[kTensorArenaSize];

int image_index = 0;
int images_done = 0;
int mismatched_images = 0;
int mismatched_values = 0;
int correct = 0;
int labelled = 0;
uint64_t counter_sum = 0, counter_min = ~0ull, counter_max = 0;
bool failed = false;

#if defined(FW_PROFILE)
// FW_PROFILE=1 (make firmware ... FW_PROFILE=1): TFLM calls BeginEvent / EndEvent around
// every node's Invoke with the op's name; this records the board counter (instructions under
// QEMU) per node and loop() prints them for the first image, one line per op:
// "op_profile <index> <OP_NAME> <count>", then "op_profile_sum <sum>".
class OpProfiler : public tflite::MicroProfilerInterface {
 public:
  static constexpr int kMaxEvents = 512;
  uint32_t BeginEvent(const char* tag) override {
    if (n_ >= kMaxEvents) return kMaxEvents;
    tags_[n_] = tag;
    start_[n_] = BoardCounter();
    return n_++;
  }
  void EndEvent(uint32_t h) override {
    const uint64_t t = BoardCounter();
    if (h < kMaxEvents) used_[h] = t - start_[h];
  }
  void Reset() { n_ = 0; }
  void Print() const {
    uint64_t sum = 0;
    for (int i = 0; i < n_; ++i) {
      BoardPrintf("op_profile %d %s %llu\n", i, tags_[i], (unsigned long long)used_[i]);
      sum += used_[i];
    }
    BoardPrintf("op_profile_sum %llu ops %d\n", (unsigned long long)sum, n_);
  }

 private:
  const char* tags_[kMaxEvents];
  uint64_t start_[kMaxEvents];
  uint64_t used_[kMaxEvents];
  int n_ = 0;
};
OpProfiler profiler;
tflite::MicroProfilerInterface* const kProfiler = &profiler;
#else
tflite::MicroProfilerInterface* const kProfiler = nullptr;
#endif

#if defined(TF_LITE_MCU_DEBUG_LOG) && !defined(ESP_PLATFORM)
void LogToBoard(const char* s) { BoardWrite(s, strlen(s)); }
#endif

// The resolver with exactly the ops the model uses (MODEL_OPS from model_settings.h).
using OpResolver = tflite::MicroMutableOpResolver<kNumOps>;
bool RegisterOps(OpResolver& resolver) {
#define FW_ADD_OP(method)                          \
  if (resolver.method() != kTfLiteOk) {            \
    BoardPrintf("error: cannot add op %s\n", #method); \
    return false;                                  \
  }
  MODEL_OPS(FW_ADD_OP)
#undef FW_ADD_OP
  return true;
}

}  // namespace

bool setup() {
#if defined(TF_LITE_MCU_DEBUG_LOG) && !defined(ESP_PLATFORM)
  RegisterDebugLogCallback(LogToBoard);
#endif
  tflite::InitializeTarget();
  BoardPrintf("board %s\n", BoardName());
  model = tflite::GetModel(g_model_data);
  if (model->version() != TFLITE_SCHEMA_VERSION) {
    BoardPrintf("error: model schema %d, firmware supports %d\n", (int)model->version(),
                (int)TFLITE_SCHEMA_VERSION);
    return false;
  }
  static OpResolver resolver;
  if (!RegisterOps(resolver)) return false;
  static tflite::MicroInterpreter static_interpreter(model, resolver, tensor_arena,
                                                     kTensorArenaSize, nullptr, kProfiler);
  interpreter = &static_interpreter;
  if (interpreter->AllocateTensors() != kTfLiteOk) {
    BoardPrintf("error: AllocateTensors failed with an arena of %d bytes\n",
                (int)kTensorArenaSize);
    return false;
  }
  input = interpreter->input(0);
  const TfLiteTensor* output = interpreter->output(0);
  const int in_elems = input->bytes;
  if (input->type != kTfLiteInt8 || in_elems != kNumRows * kNumCols * kNumChannels ||
      output->type != kTfLiteInt8 || static_cast<int>(output->bytes) != kCategoryCount) {
    BoardPrintf("error: model tensors do not match model_settings.h\n");
    return false;
  }
  smoothing = smoother.Init(kCategoryCount, FW_SMOOTHING_WINDOW, FW_SMOOTHING_THRESHOLD, 1);
  if (!smoothing) {
    BoardPrintf("smoothing off: %d classes (at most %d)\n", (int)kCategoryCount,
                tinyml::ScoreSmoother::kMaxClasses);
  }
  BoardPrintf("model bytes %u ops %d input %dx%dx%d classes %d\n", (unsigned)g_model_data_len,
              (int)kNumOps, (int)kNumRows, (int)kNumCols, (int)kNumChannels, (int)kCategoryCount);
  BoardPrintf("arena_used_bytes %u of %u\n", (unsigned)interpreter->arena_used_bytes(),
              (unsigned)kTensorArenaSize);
  return true;
}

bool loop() {
  if (GetImage(image_index, kNumCols, kNumRows, kNumChannels, input->data.int8) != kTfLiteOk) {
    return false;
  }
#if defined(FW_PROFILE)
  profiler.Reset();
#endif
  const uint64_t t0 = BoardCounter();
  const TfLiteStatus status = interpreter->Invoke();
  const uint64_t t1 = BoardCounter();
#if defined(FW_PROFILE)
  if (images_done == 0) {
    profiler.Print();
    BoardPrintf("op_profile_invoke %llu\n", (unsigned long long)(t1 - t0));
  }
#endif
  if (status != kTfLiteOk) {
    BoardPrintf("error: Invoke failed on image %d\n", image_index);
    failed = true;
    return false;
  }
  const uint64_t used = t1 - t0;
  counter_sum += used;
  if (used < counter_min) counter_min = used;
  if (used > counter_max) counter_max = used;

  const int8_t* scores = interpreter->output(0)->data.int8;
  Classification c;
  c.index = image_index;
  c.scores = scores;
  c.count = kCategoryCount;
  c.top = tinyml::Argmax(scores, kCategoryCount);
  c.expected = ExpectedScores(image_index);
  c.label = ExpectedLabel(image_index);
  c.counter = used;
  c.smoothed_label = -1;
  c.smoothed_changed = false;
  if (smoothing) {
    const tinyml::ScoreSmoother::Result r = smoother.Update(scores);
    c.smoothed_label = r.accepted ? r.label : -1;
    c.smoothed_changed = r.changed;
  }
  if (c.expected != nullptr) {
    int diff = 0;
    for (int i = 0; i < kCategoryCount; ++i) diff += scores[i] != c.expected[i];
    mismatched_values += diff;
    mismatched_images += diff != 0;
  }
  if (c.label >= 0) {
    ++labelled;
    correct += c.top == c.label;
  }
  RespondToClassification(c);
  ++images_done;
  ++image_index;
  return true;
}

int finish() {
  if (failed) return 201;
  BoardPrintf("images %d\n", images_done);
  if (images_done > 0) {
    BoardPrintf("%s_per_inference mean %llu min %llu max %llu\n", BoardCounterUnit(),
                (unsigned long long)(counter_sum / images_done), (unsigned long long)counter_min,
                (unsigned long long)counter_max);
  }
  if (labelled > 0) BoardPrintf("accuracy %d/%d\n", correct, labelled);
  BoardPrintf("arena_used_bytes %u of %u\n", (unsigned)interpreter->arena_used_bytes(),
              (unsigned)kTensorArenaSize);
  BoardPrintf("mismatched_values %d\n", mismatched_values);
  BoardPrintf("mismatched_outputs %d\n", mismatched_images);
  return mismatched_images;
}
