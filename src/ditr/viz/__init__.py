"""Pictures: projections over images, label renders, feature PCA, plots."""
