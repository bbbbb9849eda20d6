// The small board layer: everything the application needs from a board.
#ifndef FIRMWARE_BOARDS_BOARD_H_
#define FIRMWARE_BOARDS_BOARD_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Clocks, console (UART or semihosting), counter. Called first thing from main().
void BoardInit(void);
const char* BoardName(void);

// Console output (blocking).
void BoardWrite(const char* s, size_t n);
// printf-like, integers and strings only (%d %u %ld %lu %lld %llu %x %s %c %%, width).
void BoardPrintf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// A free-running 64-bit counter and what it counts. Under QEMU with `-icount shift=0` every
// guest instruction takes 1 ns of virtual time, so the board's timer gives instructions;
// on silicon it gives core cycles.
uint64_t BoardCounter(void);
const char* BoardCounterUnit(void);  // "instructions" or "cycles"

// End the run with a status: semihosting exit under QEMU (QEMU's exit status is `code`),
// on a real board report and halt.
void BoardExit(int code) __attribute__((noreturn));

#ifdef __cplusplus
}
#endif

#endif  // FIRMWARE_BOARDS_BOARD_H_
