// Classification responder for the Cortex-M boards: one line per image on the console,
//   image <i> label <true> predicted <k> <name> scores <s0,s1,..> [expected <..> match|MISMATCH]
//   <unit> <count>
// (the format tests/test_firmware_qemu.py parses). Boards with an LED can add a hook.
#include "board.h"
#include "classification_responder.h"
#include "model_settings.h"

extern "C" void BoardIndicateClass(int cls) __attribute__((weak));

namespace {
void PrintScores(const int8_t* s, int n) {
  for (int i = 0; i < n; ++i) BoardPrintf(i ? ",%d" : "%d", static_cast<int>(s[i]));
}
}  // namespace

void RespondToClassification(const Classification& c) {
  BoardPrintf("image %d label %d predicted %d %s scores ", c.index, c.label, c.top,
              kCategoryLabels[c.top]);
  PrintScores(c.scores, c.count);
  if (c.expected != nullptr) {
    bool same = true;
    for (int i = 0; i < c.count; ++i) same = same && c.scores[i] == c.expected[i];
    BoardPrintf(" expected ");
    PrintScores(c.expected, c.count);
    BoardPrintf(same ? " match" : " MISMATCH");
  }
  BoardPrintf(" %s %llu\n", BoardCounterUnit(), static_cast<unsigned long long>(c.counter));
  if (BoardIndicateClass) BoardIndicateClass(c.smoothed_label);
}
