// Bare-metal entry for the Cortex-M boards (ESP32 has its own app_main).
#include "board.h"
#include "main_functions.h"

extern "C" uint64_t BoardCounterCheck(uint32_t n);

int main(int, char**) {
  BoardInit();
  const uint32_t kLoop = 1000000;
  BoardPrintf("counter_check loop of %u instructions: %llu %s\n", (unsigned)(2 * kLoop),
              (unsigned long long)BoardCounterCheck(kLoop), BoardCounterUnit());
  if (!setup()) return 200;
  while (loop()) {
  }
  return finish();
}
