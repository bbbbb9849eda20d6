# Firmware targets, included by the top-level Makefile (which defines PY and OUT).
#   make firmware BOARD=mps2-an386 [OPTIMIZED_KERNEL_DIR=cmsis_nn|reference] [FW_MODEL_DIR=build]
#   make firmware BOARD=rv32imc-virt [OPTIMIZED_KERNEL_DIR=esp_nn|reference]   (ESP32-C3's ISA)
#   make run-qemu BOARD=mps2-an386        run it under QEMU (exit status = mismatched outputs)
#   make flash-cortexm BOARD=nucleo-l4r5zi  flash a real board with pyocd
#   make tflm                             fetch TFLM at the pinned commit + its third-party code
#   make firmware-esp32 / flash-esp32 PORT=/dev/ttyUSB0 [ESP_TARGET=esp32s3]
# See firmware/README.md.
FW_DIR := firmware
BOARD ?= mps2-an386
# The board and its architecture (boards/common/arch-*.mk): FW_ARCH_KERNELS (the optimised
# kernel set first: cmsis_nn on Cortex-M, esp_nn on RV32), cross compiler, QEMU. The board's
# facts (core, memory map) come from its profile, boards/$(BOARD).toml (boards/common/profile.mk).
-include $(FW_DIR)/boards/$(BOARD).mk
FW_PROFILE_PY ?= $(if $(wildcard $(PY)),$(PY),python3)
OPTIMIZED_KERNEL_DIR ?= $(firstword $(FW_ARCH_KERNELS) cmsis_nn)
# The board's optimised set when asked for, anything else is TFLM's reference kernels.
FW_KERNELS := $(if $(filter-out reference,$(filter $(OPTIMIZED_KERNEL_DIR),$(FW_ARCH_KERNELS))),$(OPTIMIZED_KERNEL_DIR),reference)
FW_MODEL_DIR ?= $(OUT)
FW_MODEL_NAME ?= $(if $(filter $(abspath $(OUT)),$(abspath $(FW_MODEL_DIR))),model,$(notdir $(abspath $(FW_MODEL_DIR))))
# FW_PROFILE=1: the app also prints every op's instruction (cycle) count for the first image
# (TFLM's profiler hook, app/main_functions.cc; firmware/tools/profile_ops.py reads it), in its
# own build folder. Off by default: the normal build is unchanged.
FW_PROFILE ?=
# FW_ESP_NN_ANSI=1 (with esp_nn): ESP-NN's ANSI C kernels instead of its optimised ones, the
# baseline of ESP-NN's published ESP32-S3 speedups (profile_ops.py's esp_nn_ansi; docs/LATENCY.md).
FW_ESP_NN_ANSI ?=
FW_BUILD ?= $(OUT)/firmware/$(FW_MODEL_NAME)-$(BOARD)-$(FW_KERNELS)$(if $(FW_ESP_NN_ANSI),-ansi)$(if $(FW_PROFILE),-profile)
FW_BOARDS := $(basename $(notdir $(wildcard $(FW_DIR)/boards/*.mk)))
FW_JOBS ?= 2
PYOCD ?= pyocd
QEMU ?= $(FW_ARCH_QEMU)
FW_QEMU_TIMEOUT ?= 600
COMMA := ,

# TFLM sources (a tflite-micro checkout with its third-party downloads), the first of:
#   1. TFLM_DIR, when given
#   2. firmware/third_party/tflite-micro, which `make tflm` fills (pinned commit below)
#   3. ../shared/tflm/tflite-micro beside this checkout (read-only is fine: nothing is
#      written inside it)
TFLM_REPO ?= https://github.com/tensorflow/tflite-micro
TFLM_PIN ?= 90b983c2b3f1480642e040bbd2ddb37b998f3424
TFLM_CACHE ?= $(FW_DIR)/third_party
FW_ROOT := $(patsubst %/,%,$(dir $(abspath $(firstword $(MAKEFILE_LIST)))))
TFLM_SHARED ?= $(abspath $(FW_ROOT)/../shared/tflm/tflite-micro)
TFLM_CANDIDATES := $(TFLM_CACHE)/tflite-micro $(TFLM_SHARED)
TFLM_FOUND := $(firstword $(foreach d,$(TFLM_CANDIDATES),$(if $(wildcard $(d)/tensorflow/lite/micro/micro_interpreter.h),$(d))))
TFLM_DIR ?= $(TFLM_FOUND)
TFLM_NONE_MSG := no TFLM sources: set TFLM_DIR to a tflite-micro checkout with its third-party downloads,
TFLM_NONE_MSG += or run 'make tflm' (clones the pinned commit into $(TFLM_CACHE)/tflite-micro; needs github.com),
TFLM_NONE_MSG += or put the shared tree at $(TFLM_SHARED) (see firmware/README.md)
# Espressif's ESP-NN and esp-tflite-micro (its kernels/esp_nn glue) for OPTIMIZED_KERNEL_DIR=esp_nn,
# beside the shared TFLM tree (pinned commits: ../shared/tflm/README.md, firmware/README.md).
ESP_NN_DIR ?= $(abspath $(FW_ROOT)/../shared/tflm/esp-nn)
ESP_TFLM_DIR ?= $(abspath $(FW_ROOT)/../shared/tflm/esp-tflite-micro)
# Compiled TFLM objects, one folder per key (TFLM commit, compiler, flags, core, kernels),
# shared by every build, test and clone on this machine.
FW_TFLM_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/mobilenet-edge/tflm

.PHONY: firmware run-qemu flash-check flash-cortexm tflm tflm-dir firmware-check firmware-esp32 flash-esp32 firmware-clean

# Where the build takes TFLM from (tests and bench ask this, so the order lives here only).
tflm-dir:
	@test -n "$(TFLM_DIR)" || { echo "error: $(TFLM_NONE_MSG)" >&2; exit 1; }
	@echo $(abspath $(TFLM_DIR))

# Any of these variables as this make resolves it (tests ask: make fw-var-ESP_NN_DIR).
fw-var-%:
	$(info $($*))@:

firmware-check:
	@test -f $(FW_DIR)/boards/$(BOARD).mk || { $(FW_PROFILE_PY) $(FW_DIR)/tools/board_profile.py no-port $(BOARD) || echo "error: unknown BOARD=$(BOARD); boards: $(FW_BOARDS)"; exit 1; }
	@test -z "$(FW_PROFILE_ERROR)" || { echo "error: $(FW_PROFILE_ERROR)"; exit 1; }
	@command -v $(FW_ARCH_CROSS)g++ >/dev/null || { echo "error: $(FW_ARCH_CROSS)g++ not found: sudo apt-get install $(FW_ARCH_PACKAGES)"; exit 1; }
	@test -z "$(filter rv32,$(FW_ARCH))" -o -f "$(FW_ARCH_LIBSTDCXX)/cstdint" || { echo "error: no C++ headers for $(FW_ARCH_CROSS)g++ (/usr/include/newlib/c++): sudo apt-get install $(FW_ARCH_PACKAGES)"; exit 1; }
	@test "$(FW_KERNELS)" = "$(OPTIMIZED_KERNEL_DIR)" -o "$(FW_KERNELS)" != reference -o "$(filter $(OPTIMIZED_KERNEL_DIR),cmsis_nn esp_nn)" = "" || { echo "error: OPTIMIZED_KERNEL_DIR=$(OPTIMIZED_KERNEL_DIR) is not for BOARD=$(BOARD); its kernel sets: $(FW_ARCH_KERNELS)"; exit 1; }
	@test "$(FW_KERNELS)" != esp_nn -o -f $(ESP_NN_DIR)/include/esp_nn.h -a -f $(ESP_TFLM_DIR)/tensorflow/lite/micro/kernels/esp_nn/conv.cc || { echo "error: OPTIMIZED_KERNEL_DIR=esp_nn needs ESP_NN_DIR (espressif/esp-nn, now $(ESP_NN_DIR)) and ESP_TFLM_DIR (espressif/esp-tflite-micro, now $(ESP_TFLM_DIR)) at the commits firmware/README.md names"; exit 1; }
	@test -n "$(TFLM_DIR)" || { echo "error: $(TFLM_NONE_MSG)"; exit 1; }
	@test -f $(TFLM_DIR)/tensorflow/lite/micro/micro_interpreter.h || { echo "error: no TFLM in TFLM_DIR=$(TFLM_DIR): set TFLM_DIR to a tflite-micro checkout with its third-party downloads, or unset it to use $(TFLM_CACHE)/tflite-micro ('make tflm', needs github.com) or $(TFLM_SHARED)"; exit 1; }
	@test -d $(TFLM_DIR)/tensorflow/lite/micro/tools/make/downloads/flatbuffers || { echo "error: $(TFLM_DIR) lacks its third-party downloads (flatbuffers, gemmlowp, ruy, cmsis, cmsis_nn): run 'make tflm'"; exit 1; }
	@test -f $(FW_MODEL_DIR)/tflm/model_settings.h || { echo "error: no $(FW_MODEL_DIR)/tflm/model_settings.h: build the model first ('make', then 'make microcode'), or FW_MODEL_DIR=<dir> (firmware/tools/tflm_model.py makes one from any int8 .tflite)"; exit 1; }
	@test -f $(FW_MODEL_DIR)/test_vectors.npz || { echo "error: no $(FW_MODEL_DIR)/test_vectors.npz (written by 'pipeline microcode')"; exit 1; }

firmware: firmware-check
	$(MAKE) --no-print-directory -j$(FW_JOBS) -f $(FW_DIR)/cortexm.mk FW_DIR=$(FW_DIR) BOARD=$(BOARD) \
	  FW_KERNELS=$(FW_KERNELS) TFLM_DIR=$(abspath $(TFLM_DIR)) FW_MODEL_DIR=$(FW_MODEL_DIR) \
	  FW_BUILD=$(FW_BUILD) FW_TFLM_CACHE=$(abspath $(FW_TFLM_CACHE)) $(if $(FW_TFLM_OBJ),FW_TFLM_OBJ=$(FW_TFLM_OBJ)) \
	  ESP_NN_DIR=$(ESP_NN_DIR) ESP_TFLM_DIR=$(ESP_TFLM_DIR) PY=$(abspath $(PY)) \
	  $(if $(FW_ESP_NN_ANSI),FW_ESP_NN_ANSI=1) $(if $(FW_PROFILE),FW_DEFINES="$(FW_DEFINES) -DFW_PROFILE")

# Bit-exactness run: QEMU with a deterministic instruction counter; the exit status is
# the number of outputs that differ from the host tflite-micro runtime.
run-qemu: firmware
	@test -n "$(BOARD_QEMU_MACHINE)" || { echo "error: BOARD=$(BOARD) is real hardware; use make flash-cortexm"; exit 1; }
	@command -v $(QEMU) >/dev/null || { echo "error: $(QEMU) not found: sudo apt-get install $(FW_ARCH_QEMU_PACKAGE)"; exit 1; }
	timeout $(FW_QEMU_TIMEOUT) $(QEMU) -M $(BOARD_QEMU_MACHINE) $(BOARD_QEMU_ARGS) -nographic -monitor none \
	  $(if $(filter uart,$(BOARD_QEMU_CONSOLE)),-serial stdio -semihosting-config enable=on$(COMMA)target=native, \
	    -serial null -chardev stdio$(COMMA)id=con0 -semihosting-config enable=on$(COMMA)target=native$(COMMA)chardev=con0) \
	  -icount shift=0 -kernel $(FW_BUILD)/firmware.elf

flash-check:
	@PT="$(BOARD_PYOCD_TARGET)"; \
	test -n "$$PT" || { echo "error: BOARD=$(BOARD) is not a board pyocd flashes (QEMU boards: make run-qemu); real boards: $$($(FW_PROFILE_PY) $(FW_DIR)/tools/board_profile.py pyocd-ports)"; exit 1; }; \
	command -v $(PYOCD) >/dev/null || { echo "error: pyocd not found: $(PY) -m pip install pyocd && $(PYOCD) pack install $$PT"; exit 1; }

flash-cortexm: flash-check firmware
	@PT="$(BOARD_PYOCD_TARGET)"; \
	$(PYOCD) flash -t $$PT $(FW_BUILD)/firmware.hex && \
	echo "flashed; console: $(PY) -m serial.tools.miniterm <port> 115200 (ST-LINK virtual COM port)"

# Fill the TFLM cache from upstream (needs network): the pinned commit + its downloads.
tflm:
	@mkdir -p $(TFLM_CACHE)
	@if [ ! -e $(TFLM_CACHE)/tflite-micro/.git ]; then \
	  git clone --filter=blob:none $(TFLM_REPO) $(TFLM_CACHE)/tflite-micro || { echo "error: cannot reach $(TFLM_REPO); set TFLM_DIR to a local checkout"; exit 1; }; fi
	cd $(TFLM_CACHE)/tflite-micro && git checkout -q $(TFLM_PIN)
	cd $(TFLM_CACHE)/tflite-micro && PATH=$(abspath $(dir $(PY))):$$PATH $(MAKE) -s \
	  -f tensorflow/lite/micro/tools/make/Makefile TARGET=cortex_m_generic TARGET_ARCH=cortex-m4+fp \
	  OPTIMIZED_KERNEL_DIR=cmsis_nn TARGET_TOOLCHAIN_ROOT=/usr/bin/ third_party_downloads
	@echo "TFLM at $(TFLM_CACHE)/tflite-micro ($(TFLM_PIN)) with its third-party downloads"

# ESP32: an ESP-IDF project (firmware/esp32); idf.py fetches esp-tflite-micro and
# esp32-camera from the ESP component registry (main/idf_component.yml).
ESP_TARGET ?= esp32s3
FW_ESP32_BUILD ?= $(abspath $(OUT))/firmware/esp32-$(ESP_TARGET)
define FW_NO_IDF
echo "error: idf.py not found. Install ESP-IDF v5.x and export it:"; \
echo "  git clone -b v5.4 --recursive https://github.com/espressif/esp-idf.git ~/esp/esp-idf"; \
echo "  ~/esp/esp-idf/install.sh $(ESP_TARGET) && . ~/esp/esp-idf/export.sh"; \
echo "then run this target again (see firmware/README.md)."; exit 1
endef
# ESP32-C3 has no camera: it runs the pipeline's test vectors (generated here with our python).
FW_ESP32_VECTORS = $(if $(filter esp32c3,$(ESP_TARGET))$(FW_ESP32_TEST_VECTORS),-DFW_TEST_VECTORS=$(FW_ESP32_BUILD)/test_vectors.cc)
FW_IDF = cd $(FW_DIR)/esp32 && idf.py -B $(FW_ESP32_BUILD) -DIDF_TARGET=$(ESP_TARGET) \
  -DSDKCONFIG=$(FW_ESP32_BUILD)/sdkconfig -DFW_MODEL_DIR=$(abspath $(FW_MODEL_DIR)) $(FW_ESP32_VECTORS)
firmware-esp32:
	@command -v idf.py >/dev/null || { $(FW_NO_IDF); }
	@test -f $(FW_MODEL_DIR)/tflm/model_settings.h || { echo "error: no $(FW_MODEL_DIR)/tflm: build the model first"; exit 1; }
	$(if $(FW_ESP32_VECTORS),$(PY) $(FW_DIR)/tools/gen_test_vectors.py $(FW_MODEL_DIR)/test_vectors.npz $(FW_ESP32_BUILD)/test_vectors.cc --count 10)
	$(FW_IDF) build

flash-esp32: firmware-esp32
	@test -n "$(PORT)" || { echo "error: give the serial port: make flash-esp32 PORT=/dev/ttyUSB0"; exit 1; }
	$(FW_IDF) -p $(PORT) flash monitor

firmware-clean:
	rm -rf $(OUT)/firmware
