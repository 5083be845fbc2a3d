"""The image transformer: encoded images in, top-k labels out."""
