"""The kMaX cluster decoder: learned cluster centres refined by kMaX layers, and the mask head."""
