# Arm MPS3 with the AN547 FPGA image (Corstone SSE-300): Cortex-M55 with MVE (Helium), run
# by QEMU (`mps3-an547`). QEMU starts it in the Secure state, so everything is linked at
# the Secure aliases: code in the 512 KiB ITCM, the model and test vectors in the 2 MiB
# SRAM, data (tensor arena, stack) in the 4 MiB ISRAM0/1. Console: semihosting (the UARTs
# sit behind the SSE-300 PPCs).
include $(FW_DIR)/boards/common/arch-cortex-m.mk
BOARD_DESC := Arm MPS3 AN547, Cortex-M55, QEMU mps3-an547
BOARD_TARGET_ARCH := cortex-m55
BOARD_SRCS := $(FW_DIR)/boards/mps3-an547/board.c
BOARD_DEFINES := -DBOARD_NAME='"mps3-an547"' -DBOARD_TICK_NUM=1000 -DBOARD_TICK_DEN=32
BOARD_QEMU_MACHINE := mps3-an547
BOARD_QEMU_CONSOLE := semihosting
BOARD_MEMORY := -DFLASH_ORIGIN=0x10000000 -DFLASH_SIZE=0x80000 -DMODEL_ORIGIN=0x11000000 \
  -DMODEL_SIZE=0x200000 -DRAM_ORIGIN=0x31000000 -DRAM_SIZE=0x400000
