// What the board does with a classification: print it (all boards), light an LED (boards
// that have one). One implementation per board family.
#ifndef FIRMWARE_APP_CLASSIFICATION_RESPONDER_H_
#define FIRMWARE_APP_CLASSIFICATION_RESPONDER_H_

#include <stdint.h>

struct Classification {
  int index;               // image number
  const int8_t* scores;    // kCategoryCount int8 output scores
  int count;               // kCategoryCount
  int top;                 // argmax
  const int8_t* expected;  // host tflite-micro scores, or nullptr
  int label;               // true label, or -1
  uint64_t counter;        // instructions (QEMU) or cycles for Invoke()
  bool smoothed_changed;   // the smoothed decision changed with this frame
  int smoothed_label;      // smoothed decision, or -1
};

void RespondToClassification(const Classification& c);

#endif  // FIRMWARE_APP_CLASSIFICATION_RESPONDER_H_
