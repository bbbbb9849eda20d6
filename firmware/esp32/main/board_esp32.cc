// The board layer (boards/board.h) on ESP-IDF: console = stdout (UART0 / USB serial JTAG),
// counter = CPU cycles (esp_cpu_get_cycle_count, extended to 64 bits).
#include <stdarg.h>
#include <stdio.h>

#include "board.h"
#include "esp_cpu.h"
#include "esp_system.h"
#include "sdkconfig.h"

extern "C" {

void BoardInit(void) {}

const char* BoardName(void) { return CONFIG_IDF_TARGET; }

void BoardWrite(const char* s, size_t n) {
  fwrite(s, 1, n, stdout);
  fflush(stdout);
}

void BoardPrintf(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  fflush(stdout);
}

uint64_t BoardCounter(void) {
  // 32-bit cycle counter, wraps every ~18 s at 240 MHz: called at least once per inference.
  static uint32_t last = 0;
  static uint64_t high = 0;
  const uint32_t now = (uint32_t)esp_cpu_get_cycle_count();
  if (now < last) high += 1ull << 32;
  last = now;
  return high | now;
}

const char* BoardCounterUnit(void) { return "cycles"; }

void BoardExit(int code) {
  BoardPrintf("exit %d\n", code);
  esp_restart();
}

}  // extern "C"
