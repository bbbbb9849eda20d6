// Minimal RV32 startup (machine mode, one hart) shared by the RV32 boards: the entry at the
// start of the code region (QEMU virt's reset vector jumps to 0x80000000 with -bios none),
// gp, sp, a trap handler that reports the trap and exits, .data/.bss initialisation, C++
// constructors, main(), exit through the board layer. Also the two C++ runtime hooks that
// virtual destructors reference (there is no libstdc++ for riscv64-unknown-elf in Debian),
// and what picolibc's assert()/abort() need: stdio on the board's console, _exit, kill.
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "board.h"

extern uint32_t __data_load__, __data_start__, __data_end__;
extern uint32_t __bss_start__, __bss_end__;
extern void (*__init_array_start[])(void);
extern void (*__init_array_end[])(void);
extern int main(int argc, char** argv);

void Reset_Handler(void);
void StartC(void) __attribute__((noreturn, used));
void TrapHandler(void) __attribute__((interrupt("machine"), aligned(4), used));

// Linked first (section .vectors): the address the reset vector jumps to.
__attribute__((naked, section(".vectors"))) void Reset_Handler(void) {
  __asm__ volatile(
      ".option push\n .option norelax\n la gp, __global_pointer$\n .option pop\n"
      "la sp, __stack_top__\n"
      "la t0, TrapHandler\n"
      ".option push\n .option arch, +zicsr\n csrw mtvec, t0\n .option pop\n"
      "j StartC\n");
}

static uint32_t ReadCsrMcause(void) {
  uint32_t v;
  __asm__ volatile(".option push\n .option arch, +zicsr\n csrr %0, mcause\n .option pop" : "=r"(v));
  return v;
}
static uint32_t ReadCsrMepc(void) {
  uint32_t v;
  __asm__ volatile(".option push\n .option arch, +zicsr\n csrr %0, mepc\n .option pop" : "=r"(v));
  return v;
}
static uint32_t ReadCsrMtval(void) {
  uint32_t v;
  __asm__ volatile(".option push\n .option arch, +zicsr\n csrr %0, mtval\n .option pop" : "=r"(v));
  return v;
}

void TrapHandler(void) {
  BoardPrintf("\nfatal: trap mcause=0x%x mepc=0x%x mtval=0x%x\n", (unsigned)ReadCsrMcause(),
              (unsigned)ReadCsrMepc(), (unsigned)ReadCsrMtval());
  BoardExit(255);
}

void StartC(void) {
  uint32_t* src = &__data_load__;
  for (uint32_t* dst = &__data_start__; dst < &__data_end__;) *dst++ = *src++;
  for (uint32_t* dst = &__bss_start__; dst < &__bss_end__;) *dst++ = 0;
  for (void (**f)(void) = __init_array_start; f < __init_array_end; ++f) (*f)();
  char* argv[1] = {0};
  BoardExit(main(0, argv));
}

// operator delete(void*) and operator delete(void*, size_t): TFLM never deletes (no heap),
// but the deleting destructors of its classes with virtual destructors name them.
void _ZdlPv(void* p) { (void)p; }
void _ZdlPvj(void* p, unsigned int n) {
  (void)p;
  (void)n;
}
void __cxa_pure_virtual(void) {
  BoardPrintf("\nfatal: pure virtual call\n");
  BoardExit(254);
}

// picolibc: stdin/stdout/stderr write to the board's console; abort() ends the run.
static int ConsolePut(char c, FILE* f) {
  (void)f;
  BoardWrite(&c, 1);
  return (unsigned char)c;
}
static FILE g_console = FDEV_SETUP_STREAM(ConsolePut, NULL, NULL, _FDEV_SETUP_WRITE);
FILE* const stdin = &g_console;
FILE* const stdout = &g_console;
FILE* const stderr = &g_console;

void _exit(int code) { BoardExit(code); }
int getpid(void) { return 1; }
int kill(int pid, int sig) {
  (void)pid;
  BoardPrintf("\nfatal: signal %d (abort)\n", sig);
  BoardExit(134);
}
