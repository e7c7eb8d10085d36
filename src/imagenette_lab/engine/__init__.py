"""Training and inference loops shared by every stage (zero-shot, training, feature extraction, predict)."""
