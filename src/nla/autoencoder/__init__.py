"""The autoencoder around a frozen target: the verbalizer (AV) and reconstructor (AR), and their checkpoint format."""
