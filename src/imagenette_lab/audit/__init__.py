"""`imagenette-lab audit`: what is wrong with an image-folder dataset before you trust a number.

Stages (each its own module, orchestrated by `core.run_audit`):
  scan        one decode per image: file hash, pHash/dHash, pixel statistics, EXIF orientation
  embed       frozen-backbone embeddings through the project's feature cache (rerun = no recompute)
  duplicates  exact (file hash), perceptual (Hamming) and embedding (cosine top-k) pairs
  labels      out-of-fold logistic-regression probabilities ranked by cleanlab
  odd         tiny / extreme-aspect / near-blank / greyscale / EXIF-rotated / unreadable images
  gallery     PNG contact sheets to check the findings by eye

Nothing here is imported by `imagenette-lab --help`; optional packages (imagehash, cleanlab) are
imported inside functions with a message naming the `audit` extra.
"""
