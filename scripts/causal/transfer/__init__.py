"""Transfer calibration stage internals: the calibration set, the proxy screens, agreement scores, markdown."""
