# Arm MPS3 with the AN547 FPGA image (Corstone SSE-300): Cortex-M55 with MVE (Helium), run
# by QEMU (`mps3-an547`). QEMU starts it in the Secure state, so everything is linked at
# the Secure aliases: code in the 512 KiB ITCM, the model and test vectors in the 2 MiB
# SRAM, data (tensor arena, stack) in the 4 MiB ISRAM0/1. Console: semihosting (the UARTs
# sit behind the SSE-300 PPCs).
# Board facts (description, core, TFLM target arch, memory map): boards/mps3-an547.toml.
BOARD_PROFILE := mps3-an547
include $(FW_DIR)/boards/common/profile.mk
include $(FW_DIR)/boards/common/arch-$(BOARD_FW_ARCH).mk
BOARD_SRCS := $(FW_DIR)/boards/common/semihost_board.c
BOARD_DEFINES := -DBOARD_NAME='"mps3-an547"' -DBOARD_TICK_NUM=1000 -DBOARD_TICK_DEN=32
BOARD_QEMU_MACHINE := mps3-an547
BOARD_QEMU_CONSOLE := semihosting
