"""Real benchmark datasets beyond Fashion-MNIST, cached outside the repo (see README.md here)."""
