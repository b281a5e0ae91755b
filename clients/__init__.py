"""The Flower ClientApp: local training of z and the head on a device (lands with the federation issue)."""
