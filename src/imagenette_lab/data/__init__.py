"""Data: class tables, folder indexing and image loading, transforms, download."""
