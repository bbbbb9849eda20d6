#include "semihost.h"

enum {
  kSysWrite0 = 0x04,
  kSysGetCmdline = 0x15,
  kSysExit = 0x18,
  kSysExitExtended = 0x20,
  kAdpStoppedApplicationExit = 0x20026,
};

int SemihostCall(int op, void* arg) {
  register int r0 __asm__("r0") = op;
  register void* r1 __asm__("r1") = arg;
  __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

void SemihostWrite0(const char* s) { SemihostCall(kSysWrite0, (void*)s); }

void SemihostExit(int code) {
  uint32_t block[2] = {kAdpStoppedApplicationExit, (uint32_t)code};
  SemihostCall(kSysExitExtended, block);
  // Hosts without the extension: plain SYS_EXIT (status 0 for ApplicationExit, else 1).
  SemihostCall(kSysExit, (void*)(uintptr_t)(code == 0 ? kAdpStoppedApplicationExit : 0x20023));
  for (;;) {
  }
}

int SemihostCmdline(char* buf, size_t size) {
  uint32_t block[2] = {(uint32_t)(uintptr_t)buf, (uint32_t)size};
  if (SemihostCall(kSysGetCmdline, block) != 0) return -1;
  return (int)block[1];
}
