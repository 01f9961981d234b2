"""Audio tests: decoding, conversion, quality measurement and its accuracy."""
