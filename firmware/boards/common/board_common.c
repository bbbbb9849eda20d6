// Board-layer parts every bare-metal board shares: a 64-bit counter of the core (SysTick on
// Cortex-M, the instret CSR on RISC-V), the counter check, and a small printf (integers and
// strings) on top of the board's BoardWrite.
//
// Cortex-M: the board's board.mk defines BOARD_TICK_NUM / BOARD_TICK_DEN: counter units per
// SysTick tick. SysTick runs from the processor clock. On silicon that is one tick per cycle
// (1/1). Under QEMU the processor clock is the board's SYSCLK (25 MHz on MPS2) and
// `-icount shift=0` makes every instruction last 1 ns, so one tick is 1e9 / SYSCLK
// instructions.
//
// RISC-V: instret counts retired instructions (QEMU answers it from its instruction
// counter, so it needs `-icount shift=0` too), exact to one instruction.
#include <stdarg.h>
#include <stdint.h>

#include "board.h"

#if defined(__riscv)

void BoardCounterStart(void) {}

uint64_t BoardCounter(void) {
  uint32_t hi, lo, hi2;
  do {
    __asm__ volatile(".option push\n .option arch, +zicsr\n csrr %0, instreth\n csrr %1, instret\n"
                     " csrr %2, instreth\n .option pop"
                     : "=r"(hi), "=r"(lo), "=r"(hi2));
  } while (hi != hi2);
  return ((uint64_t)hi << 32) | lo;
}

// A loop of exactly 2 * n instructions (ADDI + BNEZ per iteration); see below.
uint64_t BoardCounterCheck(uint32_t n) {
  const uint64_t t0 = BoardCounter();
  __asm__ volatile("1: addi %0, %0, -1\n bnez %0, 1b" : "+r"(n));
  return BoardCounter() - t0;
}

#else  // Cortex-M

#ifndef BOARD_TICK_NUM
#error "board.mk must define BOARD_TICK_NUM and BOARD_TICK_DEN"
#endif
#define SYST_CSR (*(volatile uint32_t*)0xE000E010)
#define SYST_RVR (*(volatile uint32_t*)0xE000E014)
#define SYST_CVR (*(volatile uint32_t*)0xE000E018)

static volatile uint32_t g_systick_wraps;

void SysTick_Handler(void) { g_systick_wraps++; }

void BoardCounterStart(void) {
  SYST_RVR = 0x00FFFFFF;
  SYST_CVR = 0;
  SYST_CSR = 7;  // processor clock, interrupt, enable
  // Writing CVR cleared it; the first tick reloads RVR without counting a wrap.
  while (SYST_CVR == 0) {
  }
  g_systick_wraps = 0;
}

uint64_t BoardCounter(void) {
  uint32_t wraps, val;
  do {
    wraps = g_systick_wraps;
    val = SYST_CVR;
    // A wrap between the two reads shows as a pending SysTick (ICSR.PENDSTSET).
    if (*(volatile uint32_t*)0xE000ED04 & (1u << 26)) {
      __asm__ volatile("dsb\n isb");  // let the handler run, then read again
      continue;
    }
  } while (wraps != g_systick_wraps);
  const uint64_t ticks = ((uint64_t)wraps << 24) + (0x00FFFFFFu - val);
  return ticks * (uint64_t)(BOARD_TICK_NUM) / (uint64_t)(BOARD_TICK_DEN);
}

// A loop of exactly 2 * n instructions (SUBS + BNE per iteration), measured with the
// counter: under QEMU it must read 2 * n instructions (give or take the counter's
// resolution and the two counter reads), which checks BOARD_TICK_NUM / BOARD_TICK_DEN.
uint64_t BoardCounterCheck(uint32_t n) {
  const uint64_t t0 = BoardCounter();
  __asm__ volatile("1: subs %0, %0, #1\n bne 1b" : "+r"(n) : : "cc");
  return BoardCounter() - t0;
}

#endif  // __riscv

static void PutU64(char** p, char* end, uint64_t v, unsigned base, int width, char pad, int neg) {
  char tmp[24];
  int n = 0;
  do {
    const unsigned d = (unsigned)(v % base);
    tmp[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
    v /= base;
  } while (v);
  if (neg) tmp[n++] = '-';
  while (n < width && n < (int)sizeof(tmp)) tmp[n++] = pad;
  while (n && *p < end) *(*p)++ = tmp[--n];
}

void BoardPrintf(const char* fmt, ...) {
  char buf[256];
  char* p = buf;
  char* const end = buf + sizeof(buf);
  va_list ap;
  va_start(ap, fmt);
  for (; *fmt; ++fmt) {
    if (p >= end - 24) {
      BoardWrite(buf, (size_t)(p - buf));
      p = buf;
    }
    if (*fmt != '%') {
      *p++ = *fmt;
      continue;
    }
    ++fmt;
    char pad = ' ';
    int width = 0, longs = 0;
    if (*fmt == '0') pad = '0';
    while (*fmt >= '0' && *fmt <= '9') width = width * 10 + (*fmt++ - '0');
    while (*fmt == 'l') ++longs, ++fmt;
    switch (*fmt) {
      case 'd': {
        int64_t v = longs >= 2 ? va_arg(ap, long long) : longs ? va_arg(ap, long) : va_arg(ap, int);
        PutU64(&p, end, v < 0 ? (uint64_t)(-v) : (uint64_t)v, 10, width, pad, v < 0);
        break;
      }
      case 'u':
      case 'x': {
        uint64_t v = longs >= 2 ? va_arg(ap, unsigned long long)
                     : longs    ? va_arg(ap, unsigned long)
                                : va_arg(ap, unsigned);
        PutU64(&p, end, v, *fmt == 'x' ? 16 : 10, width, pad, 0);
        break;
      }
      case 's': {
        const char* s = va_arg(ap, const char*);
        int n = 0;
        for (; *s; ++s, ++n) {
          if (p >= end) {
            BoardWrite(buf, (size_t)(p - buf));
            p = buf;
          }
          *p++ = *s;
        }
        for (; n < width && p < end; ++n) *p++ = ' ';
        break;
      }
      case 'c':
        *p++ = (char)va_arg(ap, int);
        break;
      case '%':
        *p++ = '%';
        break;
      default:
        *p++ = '?';
        break;
    }
  }
  va_end(ap);
  BoardWrite(buf, (size_t)(p - buf));
}
