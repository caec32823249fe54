"""What a run shows people: the figures, Grad-CAM heatmaps and the predictions file's reading."""
