// As TFLM's person_detection example: setup() once, loop() per image.
#ifndef FIRMWARE_APP_MAIN_FUNCTIONS_H_
#define FIRMWARE_APP_MAIN_FUNCTIONS_H_

// Loads the model, registers its ops, allocates the arena. Returns false on failure.
bool setup();
// Gets one image, runs the model, reports. Returns false when the image provider is done
// (the test-vector provider stops after the last vector; a camera never does).
bool loop();
// Status for the end of a run: the number of outputs that differ from the expected
// (host tflite-micro) outputs, or a negative value after an error.
int finish();

#endif  // FIRMWARE_APP_MAIN_FUNCTIONS_H_
