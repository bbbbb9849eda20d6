# RV32IMC, the ESP32-C3's instruction set, on QEMU's RISC-V `virt` machine: the app, TFLM
# and the kernels an ESP32-C3 runs (ESP-NN's generic optimised C, or TFLM's reference
# kernels), compiled for the C3's ISA and run instruction-exact. Console: the NS16550A UART
# at 0x10000000; exit: the SiFive test device at 0x100000; counter: the instret CSR.
# Memory: an ESP32-C3 has 4 MiB of flash and 400 KiB of SRAM, of which an ESP-IDF app gets
# about 320 KiB: code and model in 4 MiB at the start of virt's RAM (QEMU's reset vector
# jumps to 0x80000000 with -bios none), data (tensor arena, heap, stack) in 320 KiB after it.
# Board facts (description, core, TFLM target arch, memory map): boards/rv32imc-virt.toml.
BOARD_PROFILE := rv32imc-virt
include $(FW_DIR)/boards/common/profile.mk
include $(FW_DIR)/boards/common/arch-$(BOARD_FW_ARCH).mk
BOARD_SRCS := $(FW_DIR)/boards/rv32imc-virt/board.c
BOARD_DEFINES := -DBOARD_NAME='"rv32imc-virt"'
BOARD_QEMU_MACHINE := virt
BOARD_QEMU_CONSOLE := uart
BOARD_QEMU_ARGS := -bios none
