# Bare-metal firmware build (Cortex-M, and RV32 since boards/rv32imc-virt), run by
# firmware/firmware.mk as a sub-make:
#   make -f firmware/cortexm.mk BOARD=... FW_KERNELS=cmsis_nn|esp_nn|reference TFLM_DIR=... \
#        FW_MODEL_DIR=... FW_BUILD=... FW_TFLM_CACHE=... PY=... [ESP_NN_DIR=... ESP_TFLM_DIR=...]
# The board's .mk includes its architecture (boards/common/arch-<arch>.mk: cross compiler,
# TFLM target, C library, startup). TFLM's flags and source list come from TFLM's own
# Makefile (tools/tflm_sources.py); everything is compiled here with Debian's cross compiler
# into $(FW_BUILD) and the TFLM object cache $(FW_TFLM_CACHE)/<key> (key: TFLM commit,
# compiler version, flags, core, kernel set; tools/tflm_sources.py sets FW_TFLM_OBJ to it
# unless given).
FW_DIR ?= firmware
include $(FW_DIR)/boards/$(BOARD).mk
$(if $(FW_PROFILE_ERROR),$(error $(FW_PROFILE_ERROR)))

CROSS ?= $(FW_ARCH_CROSS)
CC := $(CROSS)gcc
CXX := $(CROSS)g++
OBJCOPY := $(CROSS)objcopy
SIZE := $(CROSS)size
FW_VECTORS ?= 10
STACK_SIZE ?= 0x4000
HEAP_SIZE ?= 0x2000
Q ?= @

MODEL_TFLM := $(FW_MODEL_DIR)/tflm
SOURCES_MK := $(FW_BUILD)/tflm_sources.mk
ELF := $(FW_BUILD)/firmware.elf

.DEFAULT_GOAL := all
.DELETE_ON_ERROR:
.SUFFIXES:

$(SOURCES_MK): $(MODEL_TFLM)/model_settings.h $(FW_DIR)/tools/tflm_sources.py
	@mkdir -p $(@D)
	$(Q)$(PY) $(FW_DIR)/tools/tflm_sources.py --tflm-dir $(TFLM_DIR) --target $(FW_ARCH_TFLM_TARGET) \
	  --target-arch $(BOARD_TARGET_ARCH) --kernels $(FW_KERNELS) --cxx $(CXX) \
	  --extra-flags="$(FW_ARCH_FLAGS)" --extra-cxxflags="$(FW_ARCH_CXXFLAGS)" \
	  $(if $(filter esp_nn,$(FW_KERNELS)),--esp-nn-dir $(ESP_NN_DIR) --esp-tflite-micro-dir $(ESP_TFLM_DIR) \
	    --esp-timer-stub $(FW_DIR)/boards/common/esp_timer $(if $(FW_ESP_NN_ANSI),--esp-nn-ansi)) \
	  --cache-root $(FW_TFLM_CACHE) --model-settings $(MODEL_TFLM)/model_settings.h --out $@ $(if $(FW_ALL_KERNELS),--all-kernels)
include $(SOURCES_MK)

CPU_FLAGS := $(filter $(FW_ARCH_CPU_FLAGS),$(TFLM_CXXFLAGS))

TFLM_CORE_OBJS := $(addprefix $(FW_TFLM_OBJ)/,$(TFLM_CORE_SRCS:=.o))
TFLM_KERNEL_OBJS := $(addprefix $(FW_TFLM_OBJ)/,$(TFLM_KERNEL_SRCS:=.o))
TFLM_THIRD_OBJS := $(addprefix $(FW_TFLM_OBJ)/,$(TFLM_THIRD_PARTY_SRCS:=.o))
$(TFLM_CORE_OBJS): OPT := $(TFLM_CORE_OPT)
$(TFLM_KERNEL_OBJS): OPT := $(TFLM_KERNEL_OPT)
$(TFLM_THIRD_OBJS): OPT := $(TFLM_THIRD_PARTY_OPT)
# ESP-NN (FW_KERNELS=esp_nn): esp-tflite-micro's kernels in place of TFLM's, and ESP-NN.
ESP_KERNEL_OBJS := $(addprefix $(FW_TFLM_OBJ)/esp-tflite-micro/,$(ESP_NN_KERNEL_SRCS:=.o))
ESP_NN_OBJS := $(addprefix $(FW_TFLM_OBJ)/esp-nn/,$(ESP_NN_SRCS:=.o))
TFLM_OBJS := $(TFLM_CORE_OBJS) $(TFLM_KERNEL_OBJS) $(TFLM_THIRD_OBJS) $(ESP_KERNEL_OBJS) $(ESP_NN_OBJS)

# Into the shared cache through a temporary name: a build that stops half-way, or a second
# build of the same key at the same time, never leaves a partial object under its real name.
$(FW_TFLM_OBJ)/%.cc.o: $(TFLM_ROOT)/%.cc
	@mkdir -p $(@D)
	@echo "  CXX  tflm/$*.cc"
	$(Q)$(CXX) $(TFLM_CXXFLAGS) $(OPT) $(TFLM_INCLUDES) -c $< -o $@.$$$$.tmp && mv -f $@.$$$$.tmp $@
$(FW_TFLM_OBJ)/%.c.o: $(TFLM_ROOT)/%.c
	@mkdir -p $(@D)
	@echo "  CC   tflm/$*.c"
	$(Q)$(CC) $(TFLM_CCFLAGS) $(OPT) $(TFLM_INCLUDES) -c $< -o $@.$$$$.tmp && mv -f $@.$$$$.tmp $@
$(FW_TFLM_OBJ)/esp-tflite-micro/%.cc.o: $(ESP_TFLM_ROOT)/%.cc
	@mkdir -p $(@D)
	@echo "  CXX  esp-tflite-micro/$*.cc"
	$(Q)$(CXX) $(TFLM_CXXFLAGS) $(TFLM_KERNEL_OPT) $(ESP_NN_KERNEL_FLAGS) $(TFLM_INCLUDES) -c $< -o $@.$$$$.tmp && mv -f $@.$$$$.tmp $@
$(FW_TFLM_OBJ)/esp-nn/%.c.o: $(ESP_NN_ROOT)/%.c
	@mkdir -p $(@D)
	@echo "  CC   esp-nn/$*.c"
	$(Q)$(CC) $(TFLM_CCFLAGS) $(ESP_NN_CFLAGS) -c $< -o $@.$$$$.tmp && mv -f $@.$$$$.tmp $@

# The application: board-independent app + shared C++, the board layer, the generated
# model and test vectors.
APP_INCLUDES := -I$(FW_DIR)/app -I$(FW_DIR)/src -I$(FW_DIR)/boards -I$(FW_DIR)/boards/common \
  -I$(MODEL_TFLM) $(TFLM_INCLUDES)
APP_DEFS := $(BOARD_DEFINES) $(FW_DEFINES)
APP_CXX_SRCS := $(FW_DIR)/app/main.cc $(FW_DIR)/app/main_functions.cc \
  $(FW_DIR)/src/image_preprocess.cc $(FW_DIR)/src/postprocess.cc \
  $(FW_DIR)/boards/common/test_vector_image_provider.cc \
  $(FW_DIR)/boards/common/uart_classification_responder.cc $(BOARD_CXX_SRCS)
APP_C_SRCS := $(FW_ARCH_C_SRCS) $(FW_DIR)/boards/common/board_common.c $(BOARD_SRCS)
APP_OBJS := $(patsubst $(FW_DIR)/%,$(FW_BUILD)/app/%.o,$(APP_CXX_SRCS) $(APP_C_SRCS))
GEN_OBJS := $(FW_BUILD)/gen/model_data.o $(FW_BUILD)/gen/test_vectors.o

$(FW_BUILD)/app/%.cc.o: $(FW_DIR)/%.cc $(MODEL_TFLM)/model_settings.h $(SOURCES_MK)
	@mkdir -p $(@D)
	@echo "  CXX  $(FW_DIR)/$*.cc"
	$(Q)$(CXX) $(TFLM_CXXFLAGS) -O2 $(APP_DEFS) $(APP_INCLUDES) -c $< -o $@
$(FW_BUILD)/app/%.c.o: $(FW_DIR)/%.c $(SOURCES_MK)
	@mkdir -p $(@D)
	@echo "  CC   $(FW_DIR)/$*.c"
	$(Q)$(CC) $(TFLM_CCFLAGS) -O2 $(APP_DEFS) $(APP_INCLUDES) -c $< -o $@

# Regenerate the vectors when FW_VECTORS changes, not only when the npz does.
FW_VECTORS_STAMP := $(FW_BUILD)/gen/vectors-$(FW_VECTORS).stamp
$(FW_VECTORS_STAMP):
	@mkdir -p $(@D) && rm -f $(FW_BUILD)/gen/vectors-*.stamp && touch $@
$(FW_BUILD)/gen/test_vectors.cc: $(FW_MODEL_DIR)/test_vectors.npz $(FW_DIR)/tools/gen_test_vectors.py $(FW_VECTORS_STAMP)
	@mkdir -p $(@D)
	$(Q)$(PY) $(FW_DIR)/tools/gen_test_vectors.py $< $@ --count $(FW_VECTORS)
$(FW_BUILD)/gen/test_vectors.o: $(FW_BUILD)/gen/test_vectors.cc
	$(Q)$(CXX) $(TFLM_CXXFLAGS) -O2 $(APP_INCLUDES) -c $< -o $@
$(FW_BUILD)/gen/model_data.o: $(MODEL_TFLM)/model_data.cc $(SOURCES_MK)
	@mkdir -p $(@D)
	$(Q)$(CXX) $(TFLM_CXXFLAGS) -O2 $(APP_INCLUDES) -c $< -o $@

$(FW_BUILD)/board.ld: $(FW_DIR)/boards/common/cortex_m.ld.in $(FW_DIR)/boards/$(BOARD).mk $(BOARD_PROFILE_FILE)
	@mkdir -p $(@D)
	$(Q)$(CC) -E -P -x c $(BOARD_MEMORY) -DSTACK_SIZE=$(STACK_SIZE) -DHEAP_SIZE=$(HEAP_SIZE) $< -o $@

# Link; when the board's flash or RAM is too small say what does not fit, with numbers.
MODEL_BYTES = $$(sed -n 's/.*g_model_data_len *= *\([0-9]*\).*/\1/p' $(MODEL_TFLM)/model_data.cc)
ARENA_BYTES = $$(sed -n 's/.*kTensorArenaSize *= *\([0-9]*\).*/\1/p' $(MODEL_TFLM)/model_settings.h)
$(ELF): $(APP_OBJS) $(GEN_OBJS) $(TFLM_OBJS) $(FW_BUILD)/board.ld
	@echo "  LD   $@"
	$(Q)$(CROSS)$(FW_ARCH_LINKER) $(CPU_FLAGS) -nostartfiles $(FW_ARCH_LDFLAGS) \
	  -T $(FW_BUILD)/board.ld -Wl,--gc-sections -Wl,-Map=$(FW_BUILD)/firmware.map \
	  $(APP_OBJS) $(GEN_OBJS) $(TFLM_OBJS) \
	  -lm -o $@ 2> $(FW_BUILD)/link.log || { cat $(FW_BUILD)/link.log; \
	  if grep -qE "overflowed|will not fit|RAM overflow" $(FW_BUILD)/link.log; then \
	    echo "error: the firmware does not fit BOARD=$(BOARD) ($(BOARD_DESC)):"; \
	    echo "  the model is $(MODEL_BYTES) bytes of flash, the tensor arena (kTensorArenaSize)"; \
	    echo "  $(ARENA_BYTES) bytes of RAM; the board has $(BOARD_MEMORY)"; \
	    echo "  Use a smaller model (width, resolution), or a board with more memory."; fi; \
	  exit 1; }
	$(Q)cat $(FW_BUILD)/link.log >&2

$(FW_BUILD)/firmware.bin: $(ELF)
	$(Q)$(OBJCOPY) -O binary $< $@
$(FW_BUILD)/firmware.hex: $(ELF)
	$(Q)$(OBJCOPY) -O ihex $< $@

all: $(ELF) $(FW_BUILD)/firmware.bin $(FW_BUILD)/firmware.hex
	$(Q)$(SIZE) $(ELF) | tee $(FW_BUILD)/size.txt
	@echo "firmware: $(ELF) (.bin, .hex beside it) for $(BOARD_DESC), $(FW_KERNELS) kernels"

.PHONY: all
