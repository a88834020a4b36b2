"""Gateway: the public edge API of the shop."""
