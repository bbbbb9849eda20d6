// The Arm FPGA boards whose UARTs sit behind TrustZone peripheral protection (MPS3 AN547,
// Cortex-M55; MPS2 AN505, Cortex-M33) under QEMU, started in the Secure state. Console and
// exit through semihosting; the counter is SysTick on the system clock (the board's .mk
// gives the instructions per tick with `-icount shift=0`).
#include <string.h>

#include "board.h"
#include "semihost.h"

void BoardCounterStart(void);

void BoardInit(void) { BoardCounterStart(); }
const char* BoardName(void) { return BOARD_NAME; }
const char* BoardCounterUnit(void) { return "instructions"; }

void BoardWrite(const char* s, size_t n) {
  char buf[129];
  while (n) {
    const size_t k = n < sizeof(buf) - 1 ? n : sizeof(buf) - 1;
    memcpy(buf, s, k);
    buf[k] = 0;
    SemihostWrite0(buf);
    s += k;
    n -= k;
  }
}

void BoardExit(int code) { SemihostExit(code); }
