"""Container tests: build and run the real images (helpers in imagekit)."""
