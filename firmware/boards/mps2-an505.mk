# Arm MPS2+ with the AN505 FPGA image (IoT Kit / SSE-200 style subsystem): Cortex-M33 with the
# DSP extension, run by QEMU (`mps2-an505`). QEMU starts it in the Secure state, so everything is
# linked at the Secure aliases: code, model and test vectors in ZBT SSRAM1 (4 MiB at 0x10000000),
# data (tensor arena, stack) in ZBT SSRAM2/3 (4 MiB at 0x38000000). Console: semihosting (the
# UARTs sit behind the PPCs). A measurement port: it gives the latency model armv8-m mainline
# counts (firmware/tools/profile_ops.py), as no M33 board has a port of its own.
# Board facts (description, core, TFLM target arch, memory map): boards/mps2-an505.toml.
BOARD_PROFILE := mps2-an505
include $(FW_DIR)/boards/common/profile.mk
include $(FW_DIR)/boards/common/arch-$(BOARD_FW_ARCH).mk
BOARD_SRCS := $(FW_DIR)/boards/common/semihost_board.c
BOARD_DEFINES := -DBOARD_NAME='"mps2-an505"' -DBOARD_TICK_NUM=1000000000 -DBOARD_TICK_DEN=20000000
BOARD_QEMU_MACHINE := mps2-an505
BOARD_QEMU_CONSOLE := semihosting
